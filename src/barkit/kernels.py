"""Numbers that must not depend on the machine (the toy world's tables): pin the CPU kernels that round
differently per ISA, and say in every table which kernels produced it.

Measured (torch 2.13 CPU): ATen's vectorised kernels differ per dispatch level (the normal sampler that
initialises the base model, softmax), so the same seed gives another world under AVX-512 than under AVX2, and
training amplifies it; thread counts (1, 2, 4) change no bit of a toy model's gradients. So the demo and the toy
world run with ATen's AVX2 kernels, MKL's AVX2 conditional-numerical-reproducibility (CNR) branch and oneDNN
capped at AVX2. MKL's CNR branches other than AUTO and COMPATIBLE exist only on Intel CPUs: elsewhere
MKL_CBWR=AVX2 silently runs the AUTO branch. So the pins give one table on Intel CPUs with AVX2 and another on
AMD ones (quick profile: one seed's cells up to 16 points apart, the 3-seed means 7; docs/results.md);
MKL_CBWR=COMPATIBLE (SSE2) is the branch Intel documents as vendor-independent and made the quick demo 1.7x
slower here, so it is an opt-in (set it in the environment). Values set in the environment beforehand win;
elsewhere (no AVX2, another architecture) nothing is pinned.
"""

from __future__ import annotations

import os
import platform
import sys

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _cpuinfo(key: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), "")
    except OSError:
        return ""


def _has_avx2() -> bool:
    return " avx2" in f" {_cpuinfo('flags')}"


def pin() -> None:
    """Set the pins, only before torch is imported: ATen reads them once, at its first kernel dispatch, and a
    process that already runs other kernels must not hand its worker processes different ones."""
    if "torch" in sys.modules:
        return
    if platform.machine() in ("x86_64", "AMD64") and _has_avx2():
        for name, value in PINS.items():
            os.environ.setdefault(name, value)


def _requested_branch(setting: str) -> str:
    """The branch a MKL_CBWR value names ("AVX2", "BRANCH=AVX2,STRICT", ...), upper-case."""
    return setting.split(",")[0].strip().upper().removeprefix("BRANCH=") or "UNSET"


def mkl_branch(setting: str, vendor: str) -> str:
    """The MKL CNR branch that `MKL_CBWR=setting` actually runs on a CPU of `vendor` (/proc/cpuinfo's
    vendor_id): branches other than AUTO and COMPATIBLE are Intel-only, and anywhere else MKL falls back to AUTO
    without a warning."""
    branch = _requested_branch(setting)
    if branch in ("UNSET", "AUTO", "COMPATIBLE", "OFF") or vendor == "GenuineIntel":
        return branch
    return "AUTO"


def describe() -> str:
    """The kernel settings this process runs with, for the table's footer: tables with the same footer are the
    same bits; the CPU vendor is part of it because MKL's branch depends on it."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    setting = os.environ.get("MKL_CBWR", "unset")
    vendor = _cpuinfo("vendor_id") or "unknown vendor"
    branch = mkl_branch(setting, vendor)
    ran = f"MKL_CBWR={setting}" + ("" if branch == _requested_branch(setting) else f" (runs MKL's {branch} branch)")
    pinned = capability == "AVX2" and setting == PINS["MKL_CBWR"]
    return (f"CPU kernels: ATen {capability}, {ran}, {vendor}" +
            ("" if pinned else " (not the demo's pinned settings: numbers may differ from the docs' tables)"))
