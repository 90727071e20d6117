"""AdamW over the trainable tensors and a learning-rate schedule that is a pure function of the step.

A stateless schedule means a resumed run needs no scheduler state: the step number is enough.
"""

from __future__ import annotations

import math

import torch

from barkit.train.stages import StageConfig


def warmup_steps(cfg: StageConfig, total: int) -> int:
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, total)
    return int(round(cfg.warmup_ratio * total))


def lr_at(step: int, total: int, cfg: StageConfig) -> float:
    """Linear warmup from lr/warmup (never 0), then cosine / linear decay towards min_lr_ratio * lr.

    >>> from barkit.train.stages import StageConfig
    >>> cfg = StageConfig("sft", "m", ["d"], "o", lr=1.0, schedule="linear", warmup_steps=2).resolve()
    >>> [round(lr_at(s, 6, cfg), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    warm = warmup_steps(cfg, total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warm) / max(1, total - warm)
    floor = cfg.min_lr_ratio * cfg.lr
    if cfg.schedule == "cosine":
        return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (cfg.lr - floor) * (1 - progress)


def build_optimizer(model: torch.nn.Module, cfg: StageConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only (not norms or 1-d tensors), as is usual for transformers."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in trainable if p.dim() >= 2]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.adam_betas),
                             eps=cfg.adam_eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
