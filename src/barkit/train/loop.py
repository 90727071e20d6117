"""The training loop: one optimizer step at a time, with masking, checkpoints, metrics and a progress bar.

Why a lean loop on accelerate instead of transformers' Trainer / TRL's trainers: every stage (dense
pretraining, BAR's sliced expert training, router training, GRPO) needs the same three guarantees that
sit between `backward` and `optimizer.step` and around checkpoints: frozen rows of fused expert tensors
masked and restored, a frozen-bytes fingerprint, and bit-identical resume after SIGKILL. Here the batch
order and the learning rate are functions of the step, so a checkpoint is just (weights, optimizer,
RNG, step); with Trainer that state is spread over sampler skipping, its scheduler, RNG files and (for
GRPO) a buffer of generations. On the tiny CPU models of the toy world Trainer's per-step cost was not
the problem (~10% over a bare step); one resume mechanism for all five stages was.

An objective is a callable `objective(step, update) -> metrics` that runs forward/backward over the
step's micro-batches and calls `update()` (once, or several times for GRPO's num_iterations).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from barkit.train import checkpointing
from barkit.train.data import IGNORE, Example, StepOrder, collate, collate_packed
from barkit.train.metrics import MetricsLog
from barkit.train.optim import lr_at, set_lr
from barkit.train.stages import StageConfig
from barkit.train.trainable import FrozenRows

StepCallback = Callable[[int, dict], None]


@dataclass
class Loop:
    cfg: StageConfig
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped with several processes)
    raw_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    accelerator: object
    frozen: FrozenRows
    total_steps: int
    root: Path
    metrics: MetricsLog | None
    on_step: StepCallback | None = None

    def update(self, lr: float) -> float:
        """Mask frozen rows, clip, step, restore frozen rows; return the gradient norm."""
        self.frozen.mask_grads()
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = self.accelerator.clip_grad_norm_(params, self.cfg.max_grad_norm) if self.cfg.max_grad_norm > 0 \
            else torch.tensor(0.0)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.frozen.restore()
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
        if self.cfg.save_every and done % self.cfg.save_every == 0 and done < self.total_steps:
            checkpointing.save(self.root, done, self.raw_model, self.optimizer, self.accelerator,
                               {}, self.cfg.keep_checkpoints)
        if self.on_step is not None:
            self.on_step(done, row)


def shard(items: list, rank: int, world: int) -> list:
    """This rank's contiguous share of a global batch (sizes are checked to divide evenly)."""
    per = len(items) // world
    return items[rank * per:(rank + 1) * per]


def token_loss_sum(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over positions whose label is not IGNORE."""
    return F.cross_entropy(logits_BTV[:, :-1].flatten(0, 1).float(), labels_BT[:, 1:].flatten(),
                           ignore_index=IGNORE, reduction="sum")


class LMObjective:
    """Causal LM loss (packed text, or chats with assistant-only labels), normalised per target token over
    the whole global batch so results do not depend on how it is split over processes or micro-batches."""

    def __init__(self, cfg: StageConfig, model, examples: list[Example], pad_id: int, accelerator, pack: bool):
        self.cfg, self.model, self.examples, self.pad_id, self.acc = cfg, model, examples, pad_id, accelerator
        self.pack = pack
        self.order = StepOrder(len(examples), cfg.batch_size, cfg.seed)
        world = accelerator.num_processes
        if cfg.batch_size % (world * cfg.grad_accum):
            raise_divisible(cfg, world)

    def __call__(self, step: int, update: Callable[[], float]) -> dict:
        batch = [self.examples[i] for i in self.order.batch(step)]
        targets = sum(e.num_targets for e in batch)
        mine = shard(batch, self.acc.process_index, self.acc.num_processes)
        micro = len(mine) // self.cfg.grad_accum
        world = self.acc.num_processes
        loss_sum = torch.zeros((), device=self.acc.device)
        route_sum = torch.zeros((), device=self.acc.device)
        weight = self.cfg.route_supervision
        routed = sum(len(e.input_ids) for e in batch if e.route_to is not None) if weight > 0 else 0
        layers = 1
        for k in range(self.cfg.grad_accum):
            part = mine[k * micro:(k + 1) * micro]
            inputs = collate_packed(part, self.pad_id, self.cfg.seq_len) if self.pack else collate(part, self.pad_id)
            sync = k == self.cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else self.acc.no_sync(self.model):
                # use_cache=False also matters for packing: transformers only derives the per-chat
                # (block-diagonal) mask from restarting position ids when no cache is passed
                out = self.model(input_ids=inputs["input_ids"].to(self.acc.device),
                                 attention_mask=_to(inputs["attention_mask"], self.acc.device),
                                 position_ids=_to(inputs.get("position_ids"), self.acc.device),
                                 use_cache=False, **({"output_router_logits": True} if routed else {}))
                loss = token_loss_sum(out.logits, inputs["labels"].to(self.acc.device))
                objective = loss * world / targets
                if routed:
                    layers = len(out.router_logits)
                    route = route_loss_sum(out.router_logits, inputs["route_targets"].to(self.acc.device))
                    objective = objective + weight * route * world / (routed * layers)
                    route_sum += route.detach()
                self.acc.backward(objective)
            loss_sum += loss.detach()
        grad_norm = update()
        total = self.acc.reduce(loss_sum, "sum") if world > 1 else loss_sum
        row = {"loss": float(total) / targets, "grad_norm": grad_norm, "targets": targets,
               "tokens": sum(len(e.input_ids) for e in batch)}
        if routed:
            route_total = self.acc.reduce(route_sum, "sum") if world > 1 else route_sum
            row["route_loss"] = float(route_total) / (routed * layers)
        return row


def route_loss_sum(router_logits: tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every layer's router (fp32 softmax over experts) against each token's target expert,
    summed over layers and supervised tokens (IGNORE targets are skipped).

    >>> logits = (torch.tensor([[0.0, 0.0], [5.0, 0.0]]),)
    >>> round(float(route_loss_sum(logits, torch.tensor([[1, -100]]))), 4)  # ln 2 for the first token only
    0.6931
    """
    flat = targets.reshape(-1)
    return sum(F.cross_entropy(layer.float(), flat, ignore_index=IGNORE, reduction="sum")
               for layer in router_logits)


def _to(tensor: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def raise_divisible(cfg: StageConfig, world: int) -> None:
    from barkit.errors import BarkitError

    raise BarkitError(f"config key 'batch_size': {cfg.batch_size} must be divisible by processes x grad_accum "
                      f"= {world} x {cfg.grad_accum}")
