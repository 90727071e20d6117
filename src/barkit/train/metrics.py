"""Training metrics: an append-only JSONL log (truncated to the resumed step on resume) and PNG curves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

CURVES = ("loss", "reward", "eval_reward", "eval_reward_sampled")
# differ between runs; everything else is reproducible
TIMING_KEYS = ("elapsed_s", "tokens_per_s", "step_s", "generate_s", "sync_s", "mem_peak_gb", "mem_after_step_gb")


class MetricsLog:
    """One JSON object per logged step, flushed immediately so a killed run keeps its history."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        rows = read_metrics(self.path) if resume_step is not None else []
        keep = [r for r in rows if r.get("step", 0) <= (resume_step or 0)]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.path)
        self._handle = self.path.open("a", encoding="utf-8")

    def log(self, row: dict) -> None:
        self._handle.write(json.dumps(row, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def memory_row(device: torch.device) -> dict:
    """Memory this process used, for comparing with `barkit plan`: on a GPU the allocator's peak since the last
    call (its counter is reset here) and what stays allocated after the step (weights, gradients, optimizer
    state); on the CPU the process's resident high-water mark (VmHWM, never reset)."""
    if device.type == "cuda":
        row = {"mem_peak_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3),
               "mem_after_step_gb": round(torch.cuda.memory_allocated(device) / 1e9, 3)}
        torch.cuda.reset_peak_memory_stats(device)
        return row
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    kb = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
    return {"mem_peak_gb": round(kb[0] * 1024 / 1e9, 3)} if kb else {}


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics log; a torn last line (a run killed mid-write) is dropped."""
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def plot_curves(rows: list[dict], out: Path, title: str) -> bool:
    """loss (and reward, held-out reward for RL) against step; returns False when there is nothing to plot."""
    series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None] for k in CURVES}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.5), squeeze=False)
    for ax, (key, points) in zip(axes[0], series.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True
