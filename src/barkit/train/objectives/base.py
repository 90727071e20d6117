"""The objective interface: what a training stage optimises, separate from how the loop runs it.

An objective loads its items (`load`, before the model), then each step runs forward/backward over the
step's micro-batches of the global batch and calls `update()` (once, or several times for GRPO's
`num_iterations`); the loop around it owns the optimizer, the schedule, frozen rows, checkpoints and metrics.
A new objective is one module with a subclass of `Objective` plus an entry in `barkit.train.objectives`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from barkit.config import build_section
from barkit.errors import BarkitError
from barkit.train.stages import StageConfig

Update = Callable[[], float]  # clip, step, restore frozen rows; returns the gradient norm


@dataclass
class TrainContext:
    """What an objective works with: the resolved config, the model (as prepared for data parallelism, and
    unwrapped), the tokenizer, the process group (`runtime`: rank, world size, device, collectives) and
    the run's length."""

    cfg: StageConfig
    model: torch.nn.Module
    raw_model: torch.nn.Module
    tokenizer: Any
    runtime: Any
    total_steps: int
    rollout: Any = None  # optional sampler for objectives that generate (GRPO); None = their default
    plan: Any = None  # the trainable plan (barkit.train.trainable.TrainablePlan)
    spec: Any = None  # the MoE architecture spec (barkit.arch.ArchSpec), None for dense models


class Objective:
    """Base class: subclasses set `name`, optionally `Settings` (a dataclass read from `objective_args`), and
    implement `load` and `__call__`."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type | None] = None

    def __init__(self, ctx: TrainContext, items: list, held_out: list, settings: Any = None):
        self.ctx, self.items, self.held_out, self.settings = ctx, items, held_out, settings
        self.cfg, self.model, self.acc = ctx.cfg, ctx.model, ctx.runtime

    @classmethod
    def settings_from(cls, cfg: StageConfig) -> Any:
        """The objective's own settings, built and validated from `cfg.objective_args`."""
        if cls.Settings is None:
            if cfg.objective_args:
                raise BarkitError(f"config key 'objective_args': the '{cls.name}' objective takes no settings")
            return None
        return build_section(cls.Settings, cfg.objective_args, "objective_args.")

    @classmethod
    def load(cls, cfg: StageConfig, tokenizer, settings: Any) -> tuple[list, list]:
        """(training items, held-out items), read and tokenised before the model is loaded."""
        raise NotImplementedError

    @classmethod
    def items_per_step(cls, cfg: StageConfig) -> int:
        """Items one optimizer step consumes (for `epochs` -> steps)."""
        return cfg.batch_size

    def __call__(self, step: int, update: Update) -> dict:
        raise NotImplementedError

    def evaluate(self, step: int) -> dict:
        """Held-out metrics (`eval_*`), logged before the first step; empty when the objective has none."""
        return {}


def shard(items: list, rank: int, world: int) -> list:
    """This rank's contiguous share of a global batch (sizes are checked to divide evenly)."""
    per = len(items) // world
    return items[rank * per:(rank + 1) * per]


def check_divisible(cfg: StageConfig, world: int, items: int | None = None) -> None:
    """The global batch (or `items`) must split evenly over processes x micro-batches."""
    if (items if items is not None else cfg.batch_size) % (world * cfg.grad_accum):
        raise BarkitError(f"config key 'batch_size': {cfg.batch_size} must be divisible by processes x grad_accum "
                          f"= {world} x {cfg.grad_accum}")
