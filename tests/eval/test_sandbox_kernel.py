"""What the sandbox leaves to the kernel: the syscall filter, the whole-sandbox memory cap, no lock channel between
sandboxes, and the first-use probe's round trip through the root the code under test gets."""

import fcntl
import json
import os
from pathlib import Path

import pytest

from barkit.eval import memory_cgroup, sandbox, seccomp

pytestmark = pytest.mark.skipif(sandbox._mode() == "plain", reason="no namespaces on this machine")

HOLD = """
import json, os, select, time
r, w = os.pipe()
kids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        block = b"\\x01" * (100 << 20)  # written, so resident
        os.write(w, b"h")
        time.sleep(6)
        os._exit(0)
    kids.append(pid)
os.close(w)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    if select.select([r], [], [], 0.1)[0] and not os.read(r, 16):
        break
alive = sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in kids)
print(json.dumps({"holding_100_mb": alive}))
"""


@pytest.mark.skipif(memory_cgroup.available() is None, reason="no writable memory cgroup here")
def test_the_processes_of_one_sandbox_together_stay_under_its_memory_cap(monkeypatch):
    """Six children each write 100 MB: under a 256 MB cap at most two hold it at once (the kernel kills the
    rest); the control, with per-process limits only, lets all six hold 600 MB."""
    capped = sandbox.run_python(HOLD, memory_mb=256, timeout_s=15)
    holding = json.loads(capped.stdout)["holding_100_mb"]
    assert 1 <= holding <= 2, capped
    monkeypatch.setattr(sandbox.memory_cgroup, "available", lambda: None)
    control = sandbox.run_python(HOLD, memory_mb=256, timeout_s=15)
    assert json.loads(control.stdout)["holding_100_mb"] == 6, control


@pytest.mark.skipif(memory_cgroup.available() is None, reason="no writable memory cgroup here")
def test_the_memory_cgroup_is_removed_after_the_run_and_a_kill_at_the_cap_says_memory_limit():
    parent = memory_cgroup.available().parent
    before = {p.name for p in parent.iterdir() if p.name.startswith("barkit-sbx-")}
    result = sandbox.run_python("import time\nx = b'1' * (300 << 20)\ntime.sleep(1)", memory_mb=128, timeout_s=10)
    assert not result.ok and result.killed_reason in ("memory limit",), result
    assert {p.name for p in parent.iterdir() if p.name.startswith("barkit-sbx-")} == before


def test_kernel_keys_namespaces_and_mounts_are_denied_inside():
    code = (
        "import ctypes, os\nl = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
        "out['add_key'] = (l.syscall(248, b'user', b'k', b'v', 1, -4), ctypes.get_errno())\n"
        "out['unshare'] = (l.unshare(0x10000000 | 0x00020000), ctypes.get_errno())\n"
        "out['mount'] = (l.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
        "print(repr(out))")
    result = sandbox.run_python(code)
    assert result.ok, result
    assert eval(result.stdout) == {"add_key": (-1, 1), "unshare": (-1, 1), "mount": (-1, 1)}  # EPERM


def test_threads_fork_and_subprocesses_still_work_under_the_filter():
    code = ("import os, subprocess, sys, threading\nt = threading.Thread(target=print, args=('thread',))\n"
            "t.start(); t.join()\nprint(subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True, "
            "text=True).stdout.strip())\npid = os.fork()\nif pid == 0:\n    os._exit(3)\n"
            "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    result = sandbox.run_python(code)
    assert result.ok and result.stdout.split() == ["thread", "7", "3"], result


def test_a_scratch_dir_cannot_be_replaced_by_an_uncapped_tmpfs():
    """The bypass reported against run_python: dumpable, new user + mount namespaces, own tmpfs, 100 MB in it."""
    code = ("import ctypes\nl = ctypes.CDLL(None, use_errno=True)\nl.prctl(4, 1, 0, 0, 0)\n"
            "print(l.unshare(0x10000000 | 0x00020000))\n"
            "try:\n    open('/tmp/big', 'wb').write(b'x' * (100 << 20)); print('wrote')\n"
            "except OSError as e:\n    print(e.errno)")
    result = sandbox.run_python(code, scratch_mb=16, max_file_mb=200)  # the file-size limit is not what stops it
    assert result.stdout.split() == ["-1", "28"], result  # unshare refused; ENOSPC at the 16 MB cap


def test_a_lock_on_a_shared_read_only_file_is_no_channel_between_sandboxes():
    """The host holds an exclusive lock on a file the sandbox can read; inside, a non-blocking exclusive lock
    on it succeeds (flock is a no-op there), so no program can observe another's locks."""
    shared = os.path.realpath(os.__file__)  # the stdlib: readable by every sandbox, written by none
    with open(shared, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = (f"import fcntl\nf = open({shared!r}, 'rb')\nfcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                "print('locked')")
        result = sandbox.run_python(code)
    assert result.stdout == "locked\n", result


def test_the_first_use_probe_refuses_when_the_code_under_test_cannot_start(monkeypatch):
    """Where the minimal root lacks the interpreter's prefix, every code verdict would score 0 without an error:
    the probe's round trip through that root names it instead."""
    mode = sandbox._mode()
    assert sandbox._minimal_root_missing(mode) == []
    monkeypatch.setattr(sandbox, "_root_binds", lambda: ["/dev/null"])
    missing = sandbox._minimal_root_missing(mode)
    assert len(missing) == 1 and "an interpreter in the minimal root" in missing[0], missing


def test_an_architecture_without_a_filter_table_refuses_in_one_line(monkeypatch):
    monkeypatch.setattr(seccomp.platform, "machine", lambda: "riscv64")
    monkeypatch.delenv(sandbox.UNSANDBOXED_ENV, raising=False)
    sandbox._syscall_filter.cache_clear()
    sandbox.verified_mode.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable) as err:
            sandbox.verified_mode()
        assert "seccomp syscall filter" in str(err.value) and "riscv64" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        sandbox._syscall_filter.cache_clear()
        sandbox.verified_mode.cache_clear()


def test_the_filter_program_is_well_formed():
    for machine in seccomp.SYSCALLS:
        code = seccomp.program(machine)
        assert len(code) % 8 == 0 and len(code) // 8 < 4096  # BPF_MAXINSNS
        assert set(seccomp.DENIED) <= set(seccomp.SYSCALLS[machine])
        assert len(set(seccomp.SYSCALLS[machine].values())) == len(seccomp.SYSCALLS[machine])


def test_both_sides_of_a_pair_see_only_the_interpreter_not_the_callers_files():
    """The code under test and the tests each get a minimal root: a file of the caller's (this test file) exists
    for neither; the standard library works on both sides (the untrusted side's stdout is discarded)."""
    mine = str(Path(__file__).resolve())
    check = f"import json, os, sys\nsys.stderr.write(repr((os.path.exists({mine!r}), json.dumps([1]))))"
    trusted, untrusted = sandbox.run_pair(check, check)
    assert trusted.ok and trusted.stderr == "(False, '[1]')", trusted
    assert untrusted.ok and untrusted.stderr == "(False, '[1]')", untrusted
