"""AdamW over the trainable tensors and a learning-rate schedule that is a pure function of the step.

A stateless schedule means a resumed run needs no scheduler state: the step number is enough.
"""

from __future__ import annotations

import fnmatch
import math

import torch

from barkit.arch import ArchSpec
from barkit.train.stages import StageConfig
from barkit.train.trainable import memory_templates, stock_name


def warmup_steps(cfg: StageConfig, total: int) -> int:
    if cfg.schedule.warmup_steps is not None:
        return min(cfg.schedule.warmup_steps, total)
    return int(round(cfg.schedule.warmup_ratio * total))


def lr_at(step: int, total: int, cfg: StageConfig) -> float:
    """Linear warmup from lr/warmup (never 0), then cosine / linear decay towards min_lr_ratio * lr.

    >>> from barkit.train.stages import OptimConfig, ScheduleConfig, StageConfig
    >>> cfg = StageConfig(stage="sft", model="m", data=["d"], out="o", optim=OptimConfig(lr=1.0),
    ...                   schedule=ScheduleConfig(kind="linear", warmup_steps=2)).resolve()
    >>> [round(lr_at(s, 6, cfg), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    warm, lr, kind = warmup_steps(cfg, total), cfg.optim.lr, cfg.schedule.kind
    if step < warm:
        return lr * (step + 1) / warm
    if kind == "constant":
        return lr
    progress = (step - warm) / max(1, total - warm)
    floor = cfg.schedule.min_lr_ratio * lr
    if kind == "cosine":
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (lr - floor) * (1 - progress)


def build_optimizer(model: torch.nn.Module, cfg: StageConfig, spec: ArchSpec | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not norms or 1-d tensors), as is usual for transformers.

    Trainable shared tensors (everything but expert FFNs and the router) get `lr * shared_lr_scale`:
    a small scale pushes a domain's skill into its own expert, so that averaging the shared tensors of
    several domains at compose time erases less of it. Dense models have no expert side: no scaling (so a
    recipe's scale leaves dense baselines at the full lr).
    """
    expert_side = list(memory_templates(spec).values()) if spec is not None else []  # expert FFNs, router
    opt = cfg.optim
    shared_scale = opt.shared_lr_scale if spec is not None else 1.0
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0 if any(fnmatch.fnmatchcase(stock_name(name), g) for g in expert_side) else shared_scale
        groups.setdefault((param.dim() >= 2, scale), []).append(param)
    param_groups = [{"params": params, "weight_decay": opt.weight_decay if decay else 0.0, "lr_scale": scale}
                    for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))]
    return torch.optim.AdamW(param_groups, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
