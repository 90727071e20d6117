"""The sandbox's syscall filter: a seccomp BPF program that denies what contained code never needs and what would
let it leave state in the kernel or undo the containment.

Denied (EPERM): kernel keyrings (each `add_key` pins ~20 KB of unswappable kernel memory per uid until reboot, and
the sandbox's uid is new every run, so the per-uid quota never bounds the total); new namespaces (`unshare`,
`setns`, `clone` with a CLONE_NEW* flag: a user namespace would let the program mount an uncapped tmpfs); every
mount call (old and new API) and `chroot`; `ptrace` and cross-process memory access; `bpf`, `perf_event_open`,
`userfaultfd`, io_uring (whose operations bypass seccomp); kernel modules, reboot, kexec, swap, clocks,
accounting; file handles. `clone3` answers ENOSYS, so the C library falls back to `clone`, whose flags the filter
can read. `flock` succeeds without locking anything: a lock on a read-only file shared by two sandboxes would be
a channel between them. Another ABI on the same CPU (i386 `int 0x80`, x32) kills the process.

Written by hand because the filter is a few dozen instructions and the sandbox must not depend on libseccomp.
Only the architectures in `SYSCALLS` are covered; elsewhere `program()` raises and the sandbox refuses.
"""

from __future__ import annotations

import platform
import struct

# Syscall numbers per architecture (x86_64: arch/x86/entry/syscalls/syscall_64.tbl; aarch64: the generic table).
DENIED = ("add_key", "request_key", "keyctl", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
          "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace",
          "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd", "init_module",
          "finit_module", "delete_module", "reboot", "kexec_load", "kexec_file_load", "swapon", "swapoff", "acct",
          "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "open_by_handle_at", "name_to_handle_at",
          "io_uring_setup", "io_uring_enter", "io_uring_register")
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "setns": 308, "mount": 165,
        "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "kexec_load": 246,
        "kexec_file_load": 320, "swapon": 167, "swapoff": 168, "acct": 163, "settimeofday": 164,
        "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "flock": 73, "clone": 56, "clone3": 435,
    },
    "aarch64": {
        "add_key": 217, "request_key": 218, "keyctl": 219, "unshare": 97, "setns": 268, "mount": 40,
        "umount2": 39, "pivot_root": 41, "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "kexec_load": 104,
        "kexec_file_load": 294, "swapon": 224, "swapoff": 225, "acct": 89, "settimeofday": 170,
        "clock_settime": 112, "adjtimex": 171, "clock_adjtime": 266, "open_by_handle_at": 265,
        "name_to_handle_at": 264, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "flock": 32, "clone": 220, "clone3": 435,
    },
}
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_BIT = 0x40000000  # x86_64's x32 ABI: the same numbers with this bit set
CLONE_NEW_FLAGS = 0x7E020080  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME

RET_ALLOW, RET_KILL_PROCESS = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 1, 38
LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
NR, ARCH, ARG0 = 0, 4, 16  # offsets in struct seccomp_data (arg 0's low 32 bits on little-endian)


class UnsupportedArchitecture(RuntimeError):
    pass


def errno(value: int) -> int:
    return 0x00050000 | value  # SECCOMP_RET_ERRNO


def program(machine: str | None = None) -> bytes:
    """The filter for `machine` (default: this one) as an array of `struct sock_filter`."""
    machine = machine or platform.machine()
    if machine not in SYSCALLS:
        raise UnsupportedArchitecture(f"no syscall filter for the {machine} architecture (have: {sorted(SYSCALLS)})")
    nr = SYSCALLS[machine]
    code: list[tuple[int, int, int, int]] = [
        (LD_W_ABS, 0, 0, ARCH),
        (JEQ, 1, 0, AUDIT_ARCH[machine]),
        (RET, 0, 0, RET_KILL_PROCESS),
        (LD_W_ABS, 0, 0, NR),
    ]
    if machine == "x86_64":
        code += [(JGE, 0, 1, X32_BIT), (RET, 0, 0, RET_KILL_PROCESS)]
    # each rule: if nr == N, return its action; jumps count the instructions after the test
    for name in DENIED:
        code += [(JEQ, 0, 1, nr[name]), (RET, 0, 0, errno(EPERM))]
    code += [(JEQ, 0, 1, nr["flock"]), (RET, 0, 0, errno(0)),  # errno 0: returns 0 without locking
             (JEQ, 0, 1, nr["clone3"]), (RET, 0, 0, errno(ENOSYS)),
             (JEQ, 0, 3, nr["clone"]), (LD_W_ABS, 0, 0, ARG0), (JSET, 0, 1, CLONE_NEW_FLAGS),
             (RET, 0, 0, errno(EPERM)),
             (RET, 0, 0, RET_ALLOW)]
    return b"".join(struct.pack("<HBBI", op, jt, jf, k) for op, jt, jf, k in code)
