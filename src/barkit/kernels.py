"""Numbers that must not depend on the machine (the toy world's tables): pin the CPU kernels that round
differently per ISA.

Measured on an AVX-512 machine (torch 2.13 CPU): ATen's vectorised kernels differ per dispatch level (the normal
sampler that initialises the base model, softmax), so the same seed gives another world under AVX-512 than under
AVX2, and training amplifies it; thread counts (1, 2, 4) change no bit of a toy model's gradients; MKL's GEMMs
agree across its AVX2-and-up code paths here, and its conditional numerical reproducibility mode (MKL_CBWR)
makes that a guarantee. So the demo and the toy world run with ATen's AVX2 kernels, MKL's AVX2 CNR branch and
oneDNN capped at AVX2: the same bits on every x86-64 machine with AVX2 (every x86-64 CPU since 2013-2015).
Values set in the environment beforehand win; elsewhere (no AVX2, another architecture) nothing is pinned.
"""

from __future__ import annotations

import os
import platform
import sys

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def pin() -> None:
    """Set the pins, only before torch is imported: ATen reads them once, at its first kernel dispatch, and a
    process that already runs other kernels must not hand its worker processes different ones."""
    if "torch" in sys.modules:
        return
    if platform.machine() in ("x86_64", "AMD64") and _has_avx2():
        for name, value in PINS.items():
            os.environ.setdefault(name, value)


def describe() -> str:
    """The kernel settings this process runs with, for the table's footer."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    mkl = os.environ.get("MKL_CBWR", "unset")
    pinned = capability == "AVX2" and mkl == "AVX2"
    return (f"CPU kernels: ATen {capability}, MKL_CBWR={mkl}" +
            ("" if pinned else " (not the pinned AVX2 settings: numbers may differ from the docs' tables)"))
