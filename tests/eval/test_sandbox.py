"""Containment checks: every hostile program must fail, and the host must be unharmed."""

import os
import socket
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from barkit.eval.sandbox import run_many, run_python, sandbox_protections

PROTECTIONS = sandbox_protections()
needs_namespaces = pytest.mark.skipif(
    not PROTECTIONS["network_namespace"], reason="no network/PID namespace available on this machine")


def test_plain_program_runs_with_stdin_and_reports_output():
    result = run_python("import sys\nprint(sys.stdin.read().upper())\nprint('err', file=sys.stderr)",
                        stdin="hello")
    assert (result.ok, result.returncode, result.stdout, result.stderr) == (True, 0, "HELLO\n", "err\n")
    assert (result.timed_out, result.killed_reason) == (False, None)


def test_exit_codes_and_exceptions_are_failures():
    exited = run_python("import sys; sys.exit(3)")
    raised = run_python("raise ValueError('boom')")
    assert (exited.ok, exited.returncode) == (False, 3)
    assert (raised.ok, raised.returncode) == (False, 1)
    assert raised.stderr.splitlines()[-1] == "ValueError: boom"


def test_infinite_loop_is_killed_at_the_wall_clock_limit():
    start = time.monotonic()
    result = run_python("while True:\n    pass", timeout_s=1.0)
    assert (result.ok, result.timed_out, result.killed_reason, result.returncode) == (False, True, "timeout", None)
    assert time.monotonic() - start < 5


def test_huge_allocation_fails_under_the_memory_limit():
    result = run_python("x = bytearray(10 * 2**30)\nprint('allocated')", memory_mb=256)
    assert not result.ok
    assert "allocated" not in result.stdout
    assert result.killed_reason == "memory limit"


@pytest.mark.skipif(not (PROTECTIONS["nproc_limit_effective"] or PROTECTIONS["pid_namespace"]),
                    reason="root without uid switch or PID namespace: a fork bomb would hit the host")
def test_fork_bomb_is_contained_and_host_can_still_spawn():
    uids_before = {p.uids().real for p in psutil.process_iter()}
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_python(bomb, timeout_s=1.5, max_procs=16)
    assert not result.ok and result.timed_out
    time.sleep(0.2)
    leftovers = {p.uids().real for p in psutil.process_iter()} - uids_before
    assert leftovers == set(), f"processes of sandbox uids survived: {leftovers}"
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).stdout == b"1\n"


@pytest.mark.skipif(not (PROTECTIONS["unprivileged_uid"] or PROTECTIONS["private_tmp"]),
                    reason="sandbox has neither an unprivileged uid nor a private /tmp here")
def test_write_outside_workdir_leaves_no_file(tmp_path):
    target = tmp_path / "pwned.txt"
    result = run_python(f"open({str(target)!r}, 'w').write('x')\nprint('wrote')")
    assert not result.ok and "wrote" not in result.stdout
    assert not target.exists()


@pytest.mark.skipif(not PROTECTIONS["read_only_filesystem"], reason="no mount namespace here")
def test_write_into_interpreter_dir_is_denied():
    name = f"barkit_sandbox_probe_{uuid.uuid4().hex}.txt"
    target = os.path.join(os.path.dirname(os.__file__), name)
    try:
        result = run_python(f"import os\nopen(os.path.join(os.path.dirname(os.__file__), {name!r}), 'w')")
        assert not result.ok and "Read-only file system" in result.stderr
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


def test_files_in_workdir_are_allowed_but_capped():
    small = run_python("open('out.txt', 'w').write('abc')\nprint(open('out.txt').read())")
    big = run_python("open('big', 'w').write('x' * (3 * 2**20))", max_file_mb=1)
    assert (small.ok, small.stdout) == (True, "abc\n")
    assert not big.ok and "File too large" in big.stderr


@needs_namespaces
def test_cannot_connect_to_a_port_listening_on_host_localhost():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        result = run_python(code)
        assert not result.ok and "connected" not in result.stdout
        with pytest.raises(socket.timeout):
            server.accept()


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("BARKIT_TEST_SECRET", "hunter2")
    result = run_python("import os\nprint(os.environ.get('BARKIT_TEST_SECRET'))\nprint(sorted(os.environ))")
    assert result.ok
    assert result.stdout.splitlines() == ["None", "['HOME', 'PATH']"]


def test_cwd_and_home_are_a_fresh_empty_directory():
    result = run_python("import os\nprint(os.getcwd() == os.environ['HOME'], sorted(os.listdir('.')))")
    assert result.stdout.strip() == "True ['main.py']"


def test_run_many_keeps_order():
    results = run_many([f"print({i} * {i})" for i in range(5)], workers=2)
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(5)]
    assert run_many([]) == []


def test_protections_report_is_complete():
    keys = {"mode", "unprivileged_uid", "network_namespace", "pid_namespace", "private_tmp",
            "fresh_cwd_and_home", "empty_env", "process_group_kill", "nproc_limit_effective"}
    assert keys <= set(PROTECTIONS)
    assert PROTECTIONS["mode"] in ("root-ns", "userns", "plain")
    if os.geteuid() == 0 and PROTECTIONS["mode"] == "root-ns":
        assert PROTECTIONS["unprivileged_uid"] and PROTECTIONS["nproc_limit_effective"]


@pytest.mark.skipif(PROTECTIONS["mode"] != "root-ns", reason="only root switches the program to another uid")
def test_a_work_dir_under_a_private_temp_dir_outside_the_scratch_dirs_still_runs(monkeypatch, tmp_path):
    # clusters often set TMPDIR to a scratch volume that no tmpfs covers: the work dir's private parents there
    # (here pytest's 0700 dirs, with /tmp no longer a scratch dir) must not lock the unprivileged program out
    import tempfile

    from barkit.eval import sandbox

    monkeypatch.setattr(sandbox, "SCRATCH_DIRS", tuple(d for d in sandbox.SCRATCH_DIRS if d != "/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = sandbox._run("print(6 * 7)", "root-ns", timeout_s=10, memory_mb=512, max_file_mb=1, max_procs=8,
                          scratch_mb=8, max_files=64, stdin=None)
    assert result.ok and result.stdout == "42\n", result.stderr
    assert list(tmp_path.iterdir()) == []
