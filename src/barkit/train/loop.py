"""The training loop: one optimizer step at a time, with masking, checkpoints, metrics and a progress bar.

Why a lean loop on accelerate instead of transformers' Trainer / TRL's trainers: every stage (dense
pretraining, BAR's sliced expert training, router training, GRPO) needs the same three guarantees that
sit between `backward` and `optimizer.step` and around checkpoints: frozen rows of fused expert tensors
kept out of autograd, a frozen-bytes fingerprint, and bit-identical resume after SIGKILL. Here the batch
order and the learning rate are functions of the step, so a checkpoint is just (weights, optimizer,
RNG, step); with Trainer that state is spread over sampler skipping, its scheduler, RNG files and (for
GRPO) a buffer of generations. On the tiny CPU models of the toy world Trainer's per-step cost was not
the problem (~10% over a bare step); one resume mechanism for all five stages was.

The objective (`barkit.train.objectives`) is a callable `objective(step, update) -> metrics` that runs
forward/backward over the step's micro-batches and calls `update()` (once, or several times for GRPO's
num_iterations).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from barkit.train import checkpointing
from barkit.train.metrics import MetricsLog, memory_row
from barkit.train.optim import lr_at, set_lr
from barkit.train.stages import StageConfig

StepCallback = Callable[[int, dict], None]


@dataclass
class Loop:
    cfg: StageConfig
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped with several processes)
    raw_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    accelerator: object
    total_steps: int
    root: Path
    metrics: MetricsLog | None
    on_step: StepCallback | None = None

    def update(self, lr: float) -> float:
        """Clip, step; return the gradient norm."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = self.cfg.optim.max_grad_norm
        norm = self.accelerator.clip_grad_norm_(params, clip) if clip > 0 else torch.tensor(0.0)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def run(self, objective: Callable[[int, Callable[[], float]], dict], start: int) -> dict:
        """Steps start..total-1; returns the last metrics row."""
        main = self.accelerator.is_main_process
        bar = tqdm(total=self.total_steps, initial=start, desc=self.cfg.stage, dynamic_ncols=True,
                   disable=not (self.cfg.progress and main))
        began, row = time.perf_counter(), {}
        for step in range(start, self.total_steps):
            t0 = time.perf_counter()
            lr = lr_at(step, self.total_steps, self.cfg)
            row = objective(step, lambda: self.update(lr))
            elapsed = time.perf_counter() - t0
            row = {"step": step + 1, "lr": lr, **row, "step_s": round(elapsed, 4),
                   "elapsed_s": round(time.perf_counter() - began, 2)}
            if "tokens" in row:
                row["tokens_per_s"] = round(row["tokens"] / max(elapsed, 1e-9), 1)
            row.update(memory_row(torch.device(self.accelerator.device)))
            self._log(step + 1, row, bar)
        bar.close()
        return row

    def _log(self, done: int, row: dict, bar) -> None:
        if self.metrics is not None and (done % self.cfg.log_every == 0 or done == self.total_steps
                                         or any(k.startswith("eval_") for k in row)):
            self.metrics.log(row)
        shown = {k: row[k] for k in ("loss", "reward", "eval_reward", "tokens_per_s") if k in row}
        bar.set_postfix({k.replace("tokens_per_s", "tok/s"): f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        bar.update(1)
        every = self.cfg.checkpoint.save_every
        if every and done % every == 0 and done < self.total_steps:
            checkpointing.save(self.root, done, self.raw_model, self.optimizer, self.accelerator,
                               {}, self.cfg.checkpoint.keep)
        if self.on_step is not None:
            self.on_step(done, row)
