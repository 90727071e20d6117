"""Output directories: one writer at a time, atomic appearance, and recovery from runs that were killed.

Every job that writes `OUT` holds an exclusive lock (`.OUT.lock`, an fcntl lock the kernel releases when
the process dies; the file is removed when the job ends) for as long as it works on it: a second job on
the same `OUT` fails at once with a clear error instead of silently replacing the first one's output.
Under the lock the job first reclaims what a killed run left: its temporary directories (`.OUT.tmp-*`) are
deleted, and an output that a kill caught between the two renames of `--overwrite` (OUT moved aside to
`.OUT.old-*`, the new one not yet in place) is restored. Outputs are written into a temporary directory next
to OUT and renamed into place when complete.

A killed job's temporary directory can be large (a whole checkpoint), so it should not wait for the next job
on the same OUT: each job notes its OUT in a small registry (`~/.cache/barkit/outputs/`) while it holds the
lock, and every job start reclaims the outputs of registered jobs whose lock no process holds any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from barkit.errors import BarkitError

_HELD: dict[str, int] = {}  # lock path -> depth, for jobs that lock OUT and then write it through a helper


def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def _reclaim(target: Path) -> None:
    """Delete a killed run's temporary directories; put back an output a kill left moved aside."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    aside = sorted(target.parent.glob(f".{target.name}.old-*"))
    if aside and not target.exists():
        os.replace(aside.pop(), target)
    for old in aside:
        shutil.rmtree(old, ignore_errors=True)


def _registry() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "barkit" / "outputs"


def _register(target: Path) -> Path | None:
    """Note `target` as being written (best effort: without a writable cache only its own next job reclaims)."""
    entry = _registry() / hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:24]
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(str(target.resolve()))
        return entry
    except OSError:
        return None


def reclaim_killed_jobs() -> None:
    """Reclaim the outputs of registered jobs that died (their lock is free), each under its lock."""
    try:
        entries = list(_registry().iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            target = Path(entry.read_text())
        except OSError:
            continue
        lock = _lock_path(target)
        if str(lock.resolve()) in _HELD:
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            entry.unlink(missing_ok=True)  # its directory is gone or not ours to write: nothing to reclaim
            continue
        try:
            if _acquired(fd, lock):
                _reclaim(target)
                entry.unlink(missing_ok=True)
                lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def output_lock(target: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of output `target` (re-entrant within one process)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise BarkitError(f"{target}: exists and is not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BarkitError(f"{target.parent}: cannot create the output's parent ({exc.strerror})") from None
    lock = _lock_path(target)
    key = str(lock.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise BarkitError(f"{target}: cannot lock the output ({exc.strerror})") from None
    try:
        if not _acquired(fd, lock):
            raise BarkitError(f"{target}: another barkit job is writing this output (it holds {lock.name}); "
                              "wait for it or choose another --out")
        _HELD[key] = 1
        entry = None
        try:
            _reclaim(target)
            reclaim_killed_jobs()
            entry = _register(target)
            yield
        finally:
            del _HELD[key]
            if entry is not None:
                entry.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)  # still holding it: a job that opened the old file sees it is gone
    finally:
        os.close(fd)


def _acquired(fd: int, lock: Path) -> bool:
    """The lock is ours if flock succeeds and the path still names the file we locked (the previous holder
    may have removed it between our open and our flock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except (BlockingIOError, FileNotFoundError):
        return False


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, overwrite: bool = False, inputs: tuple = ()) -> Iterator[Path]:
    """Yield a temporary directory next to `target`; rename it into place only if the block succeeds.
    `inputs`: the job's input checkpoints, which the output may not be or lie inside."""
    target = Path(target)
    refuse_inside(target, *inputs)
    with output_lock(target):
        if target.exists() and not overwrite:
            raise BarkitError(f"{target}: output already exists (pass --overwrite to replace it)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield tmp
            if target.exists():
                aside = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, aside)  # a kill here leaves OUT aside: the next job on OUT restores it
                os.replace(tmp, target)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def refuse_inside(target: str | Path, *inputs: str | Path) -> None:
    """An output may not be one of the job's input checkpoints or lie inside one (it would be written into,
    or replace, what the job is reading)."""
    out = Path(target).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if out == src or src in out.parents:
            raise BarkitError(f"{target}: the output would be inside the input {source}; choose another --out")
