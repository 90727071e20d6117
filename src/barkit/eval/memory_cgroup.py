"""One memory cap for a whole sandbox: a cgroup per program, so its processes together (and the tmpfs pages they
write) cannot hold more than the cap, where rlimits bound each process alone (32 x 512 MB).

cgroup v2 where this process's cgroup delegates the memory controller to its children, else cgroup v1's memory
hierarchy where this process may create a child group; `available()` is None where neither is writable (an
unprivileged user without delegation), and the sandbox then falls back to per-process limits and says so.
The sandbox's first process joins the group itself (writes 0 to `cgroup.procs` through a descriptor opened
here) before it starts anything, so no process of the program is ever outside it.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    parent: Path  # this process's memory cgroup, where the sandboxes' groups are made

    def create(self, limit_bytes: int) -> "Group":
        path = self.parent / f"barkit-sbx-{secrets.token_hex(6)}"
        path.mkdir()
        try:
            if self.version == 2:
                (path / "memory.max").write_text(str(limit_bytes))
                _try_write(path / "memory.swap.max", "0")
            else:
                (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                _try_write(path / "memory.memsw.limit_in_bytes", str(limit_bytes))  # no escape into swap
            return Group(path, self.version)
        except OSError:
            path.rmdir()
            raise


@dataclass(frozen=True)
class Group:
    path: Path
    version: int

    def open_procs(self) -> int:
        """A write descriptor on `cgroup.procs` for the sandbox's first process to join through."""
        return os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def oom_kills(self) -> int:
        """How many of the group's processes the kernel killed at the cap."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self, wait_s: float = 2.0) -> None:
        """Remove the group once its processes are gone (the PID namespace's end reaps them: retry briefly)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # left for the kernel to reclaim when empty; harmless (it holds no process)
                time.sleep(0.02)


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass  # no swap accounting (or no swap): nothing to cap


def _own_cgroups() -> dict[str, str]:
    """{controller list or '' (v2): path} from /proc/self/cgroup."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def _mount_points() -> dict[str, Path]:
    """{'cgroup2' or a v1 controller: its mount point} from /proc/self/mountinfo."""
    points: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = (right.split() + ["", "", ""])[:3]
        point = Path(left.split()[4])
        if fstype == "cgroup2":
            points.setdefault("cgroup2", point)
        elif fstype == "cgroup":
            for opt in options.split(","):
                points.setdefault(opt, point)
    return points


def _writable(parent: Path, version: int) -> bool:
    try:
        Hierarchy(version, parent).create(64 << 20).remove()
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def available() -> Hierarchy | None:
    """The hierarchy sandboxes get their groups in, or None (then only per-process limits hold)."""
    try:
        own, points = _own_cgroups(), _mount_points()
    except OSError:
        return None
    if "cgroup2" in points and "" in own:
        parent = points["cgroup2"] / own[""].lstrip("/")
        try:
            delegated = "memory" in (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            delegated = False
        if delegated and _writable(parent, 2):
            return Hierarchy(2, parent)
    if "memory" in points:
        path = next((p for c, p in own.items() if "memory" in c.split(",")), None)
        if path is not None:
            parent = points["memory"] / path.lstrip("/")
            if (parent / "memory.limit_in_bytes").exists() and _writable(parent, 1):
                return Hierarchy(1, parent)
    return None
