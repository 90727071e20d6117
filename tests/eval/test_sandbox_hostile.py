"""Hostile programs, run as model-written code: through the sandbox API and through `barkit score`, every one
is contained and scores 0, and nothing is left behind on the host afterwards. Without namespaces, scoring
refuses with one line."""

import json
import os
import socket
import time
from pathlib import Path

import pytest

from barkit.cli import main
from barkit.eval import sandbox
from barkit.eval.sandbox import run_many, sandbox_protections

pytestmark = pytest.mark.skipif(sandbox._mode() == "plain", reason="no namespaces on this machine")

# each prints ESCAPED when what it tries works; {port}, {home} and {prefix} are filled in per run
HOSTILE = {
    "write /etc": "open('/etc/barkit-pwned', 'w').write('x'); print('ESCAPED')",
    "write the caller's home": "open({home!r} + '/barkit-pwned', 'w').write('x'); print('ESCAPED')",
    "plant sitecustomize.py": "open({prefix!r} + '/sitecustomize.py', 'w').write('print(1)'); print('ESCAPED')",
    "read /etc/shadow": "print('ESCAPED' if open('/etc/shadow').read() else '')",
    "connect to the host's localhost": "import socket; socket.create_connection(('127.0.0.1', {port}), 2); "
                                       "print('ESCAPED')",
    "write /run/lock": "open('/run/lock/barkit-pwned', 'w').write('x'); print('ESCAPED')",
    "unmount the /tmp cover": "import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                              "print('ESCAPED' if l.umount2(b'/tmp', 2) == 0 else '')",
    "remount / read-write": "import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                            "print('ESCAPED' if l.mount(None, b'/', None, 32 | 4096, None) == 0 else '')",
    "become root": "import os; os.setuid(0); print('ESCAPED')",
    "raise a hard rlimit": "import resource as r; r.setrlimit(r.RLIMIT_NPROC, (10**6, 10**6)); print('ESCAPED')",
    "mknod a disk": "import os, stat; os.mknod('sda', stat.S_IFBLK | 0o600, os.makedev(8, 0)); print('ESCAPED')",
    "chroot": "import os; os.chroot('/'); print('ESCAPED')",
    "sethostname": "import socket; socket.sethostname('pwned'); print('ESCAPED')",
    "load a kernel module": "import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                            "print('ESCAPED' if l.syscall(313, -1, b'', 0) == 0 else '')",
    "new user namespace to regain caps, then remount /": (
        "import ctypes, os; l = ctypes.CDLL(None, use_errno=True)\n"
        "if l.unshare(0x10000000 | 0x00020000) == 0 and l.mount(None, b'/', None, 32 | 4096, None) == 0:\n"
        "    open('/etc/barkit-pwned', 'w').write('x'); print('ESCAPED')"),
    "SysV shared memory that outlives the program": (
        "import ctypes; l = ctypes.CDLL(None, use_errno=True)\n"
        "i = l.shmget(0x0BA4C17, 64 << 20, 0o1666)\n"
        "print('made' if i >= 0 else 'denied')"),
    "fill /dev/shm past the memory limit": "open('/dev/shm/fill', 'wb').write(b'x' * (200 << 20)); print('ESCAPED')",
    "100k files in the work dir": "[open(f'f{{i}}', 'w').close() for i in range(100_000)]; print('ESCAPED')",
    "1 GB in the work dir": ("import os\nfor i in range(200):\n    open(f'big{{i}}', 'wb').write(b'x' * (5 << 20))\n"
                             "print('ESCAPED')"),
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "daemon that outlives the program": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(30); open({home!r} + '/barkit-daemon', 'w').write('x')\n    os._exit(0)\n"
        "print('parent done')"),
    "kill every process": "import os, signal; os.kill(-1, signal.SIGKILL)",
    "kill the sandbox's init": ("import os, signal\ntry:\n    os.kill(1, signal.SIGKILL)\nexcept OSError:\n"
                                "    pass\nprint('still here')"),
    "see the host's processes": ("import os\nprocs = [p for p in os.listdir('/proc') if p.isdigit()]\n"
                                 "print('ESCAPED' if len(procs) > 3 else '')"),
    "write to inherited descriptors": ("import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'x')\n"
                                       "        print('ESCAPED', fd)\n    except OSError:\n        pass"),
    "infinite loop": "while True:\n    pass",
    "a kernel key that outlives the program": (
        "import ctypes; l = ctypes.CDLL(None, use_errno=True)\n"
        "k = l.syscall(248, b'user', b'barkit', b'x' * 16000, 16000, -4)\n"  # add_key into the user keyring
        "print('ESCAPED' if k >= 0 else '')"),
    "new user and mount namespaces for an uncapped tmpfs": (
        "import ctypes, os; l = ctypes.CDLL(None, use_errno=True)\n"
        "l.prctl(4, 1, 0, 0, 0)\n"  # PR_SET_DUMPABLE, as the reported bypass did
        "if l.unshare(0x10000000 | 0x00020000) == 0 and l.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None) == 0:\n"
        "    open('/tmp/big', 'wb').write(b'x' * (100 << 20)); print('ESCAPED')"),
    "a child in new namespaces (clone flags)": (
        "import os\ntry:\n    os.unshare(os.CLONE_NEWUSER)\n    print('ESCAPED')\nexcept (OSError, AttributeError):\n"
        "    pass"),
    "ptrace its own child": (
        "import ctypes, os, time; l = ctypes.CDLL(None, use_errno=True)\npid = os.fork()\n"
        "if pid == 0:\n    time.sleep(2); os._exit(0)\n"
        "print('ESCAPED' if l.ptrace(16, pid, 0, 0) == 0 else '')"),  # PTRACE_ATTACH
    "io_uring (bypasses syscall filters)": (
        "import ctypes; l = ctypes.CDLL(None, use_errno=True); p = ctypes.create_string_buffer(120)\n"
        "print('ESCAPED' if l.syscall(425, 4, p) >= 0 else '')"),
    "bpf": ("import ctypes; l = ctypes.CDLL(None, use_errno=True); a = ctypes.create_string_buffer(128)\n"
            "print('ESCAPED' if l.syscall(321, 0, a, 128) >= 0 else '')"),
    "exhaust memory": "x = bytearray(8 << 30); print('ESCAPED')",
}


def _host_state() -> dict:
    """What a contained program must not change on the host."""
    def listing(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    procs = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError):
            continue
        if uid >= sandbox._UID_RANGE[0]:
            procs.add(pid)
    keys = Path("/proc/key-users").read_text().splitlines() if Path("/proc/key-users").exists() else []
    key_uids = {line.split(":")[0].strip() for line in keys if int(line.split(":")[0]) >= sandbox._UID_RANGE[0]}
    shm = Path("/proc/sysvipc/shm").read_text().count("\n") if Path("/proc/sysvipc/shm").exists() else 0
    return {"/run/lock": listing("/run/lock"), "/dev/shm": listing("/dev/shm"), "/etc": listing("/etc"),
            "home": listing(Path.home()), "shm": shm, "procs": procs, "key users": key_uids,
            "/tmp": [n for n in listing("/tmp") if not n.startswith(("pytest-", "barkit-sbx-"))]}


def _settled(before: dict) -> dict:
    """The host state once the killed sandboxes' processes are reaped (the kernel kills them as their PID 1
    exits; a check at that very moment can still see one dying)."""
    for _ in range(50):
        now = _host_state()
        if now == before:
            return now
        time.sleep(0.1)
    return now


def _programs(port: int) -> dict[str, str]:
    fill = {"port": port, "home": str(Path.home()), "prefix": os.path.dirname(os.__file__)}
    return {name: code.format(**fill) for name, code in HOSTILE.items()}


def test_at_least_25_hostile_programs_are_contained_and_leave_nothing():
    assert len(HOSTILE) >= 25
    assert sandbox_protections()["read_only_filesystem"]
    before = _host_state()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        programs = _programs(server.getsockname()[1])
        results = dict(zip(programs, run_many(list(programs.values()), workers=2, timeout_s=3, memory_mb=256)))
    escaped = {name: r.stdout for name, r in results.items() if "ESCAPED" in r.stdout}
    assert escaped == {}
    assert "still here" in results["kill the sandbox's init"].stdout  # PID 1 ignores it: the run goes on
    assert _settled(before) == before
    assert not (Path.home() / "barkit-daemon").exists()


def test_hostile_completions_score_zero_through_barkit_score(tmp_path, capsys):
    """The same programs as HumanEval completions: `barkit score` runs each with the problem's tests, in the
    sandbox; none passes, nothing is left behind."""
    before = _host_state()
    rows = [{"id": f"HumanEval/{i}", "completion": code} for i, code in enumerate(_programs(1).values())]
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--suite", "humaneval", "--completions", str(path), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    scores = [item["score"] for item in results["items"]]
    assert len(scores) == len(rows) and max(scores) == 0
    assert _settled(before) == before


def test_without_namespaces_scoring_refuses_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)  # as on a machine without unshare
    monkeypatch.delenv(sandbox.UNSANDBOXED_ENV, raising=False)
    sandbox._mode.cache_clear()
    sandbox.verified_mode.cache_clear()
    try:
        path = tmp_path / "c.jsonl"
        path.write_text(json.dumps({"id": "HumanEval/0", "completion": "    return True"}) + "\n")
        capsys.readouterr()
        code = main(["score", "--suite", "humaneval", "--completions", str(path), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1, err
        assert "refusing to run model-written code without namespaces" in err and "BARKIT_UNSANDBOXED=1" in err
        assert not (tmp_path / "o").exists()
        monkeypatch.setenv(sandbox.UNSANDBOXED_ENV, "1")  # the explicit opt-in runs it, and warns
        sandbox.verified_mode.cache_clear()
        assert sandbox.run_python("print(2 + 2)").stdout == "4\n"
        assert "WARNING: model-written code runs UNSANDBOXED" in capsys.readouterr().err
    finally:
        sandbox._mode.cache_clear()
        sandbox.verified_mode.cache_clear()


def test_root_in_a_user_namespace_uses_the_user_namespace_mode(monkeypatch):
    """In a rootless container root cannot hand files to an unmapped uid (os.chown fails): the sandbox picks
    the user-namespace mode instead of crashing, and its probe still verifies full isolation."""
    monkeypatch.setattr(sandbox, "_can_chown_to_unprivileged", lambda: False)
    sandbox._mode.cache_clear()
    sandbox.verified_mode.cache_clear()
    try:
        if sandbox._mode() == "plain":
            pytest.skip("no user namespaces here")
        assert sandbox.verified_mode() == "userns"
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            programs = {k: v for k, v in _programs(server.getsockname()[1]).items()
                        if k in ("write /etc", "plant sitecustomize.py", "remount / read-write",
                                 "unmount the /tmp cover", "connect to the host's localhost", "write /run/lock")}
            results = run_many(list(programs.values()), workers=2, timeout_s=3)
        assert [r.stdout for r in results if "ESCAPED" in r.stdout] == []
    finally:
        sandbox._mode.cache_clear()
        sandbox.verified_mode.cache_clear()
