"""Route: train only the router of a composed MoE, and upgrade one expert (swap it, retrain the router).

Both are thin layers over the training engine's `router` stage, which keeps every non-router tensor
bit-identical; upgrading costs one expert plus a router pass, not a retraining of everything.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from barkit.arch import num_experts, spec_for_moe
from barkit.compose import replace_expert
from barkit.errors import BarkitError
from barkit.moe import parse_named
from barkit.train import StageConfig, train
from barkit.train.stages import Stage


@dataclass(kw_only=True)
class RouteConfig(StageConfig):
    """The router stage of a composed MoE: every training setting of `barkit adapt`, plus `top_k`."""

    stage: Stage = field(default="router", metadata={"help": "always router"})
    top_k: int | None = field(default=None, metadata={"help": "experts per token (default: the model's)"})

    def validate(self) -> None:
        if self.stage != "router":
            raise BarkitError(f"config key 'stage': route trains the router stage, not {self.stage}")
        super().validate()


@dataclass(kw_only=True)
class UpgradeConfig(RouteConfig):
    replace: list[str] = field(default_factory=list, metadata={"help": "NAME=NEW_CKPT (one or more)"})

    def validate(self) -> None:
        if not self.replace:
            raise BarkitError("config key 'replace': give at least one NAME=NEW_CKPT")
        super().validate()


def _with_top_k(model: str, top_k: int | None, scratch: Path) -> str:
    """A view of `model` whose config asks for `top_k` experts per token (weights hard-linked, not copied)."""
    if top_k is None:
        return model
    config = json.loads((Path(model) / "config.json").read_text())
    spec = spec_for_moe(config.get("model_type"), str(Path(model) / "config.json"))
    n = num_experts(spec, config)
    if not 1 <= top_k <= n:
        raise BarkitError(f"config key 'top_k': must be between 1 and the {n} experts of {model}")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    for item in Path(model).iterdir():
        if item.is_file():
            try:
                (scratch / item.name).hardlink_to(item)
            except OSError:
                shutil.copy2(item, scratch / item.name)
    (scratch / "config.json").unlink()
    (scratch / "config.json").write_text(json.dumps({**config, spec.top_k_key: top_k}, indent=2))
    return str(scratch)


def train_router(cfg: RouteConfig, model: str | None = None) -> Path:
    scratch = Path(cfg.out).with_name(f".{Path(cfg.out).name}.topk")
    source = _with_top_k(model or cfg.model, cfg.top_k, scratch)
    stage = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(StageConfig)}
    try:
        return train(StageConfig(**{**stage, "model": source}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def upgrade(cfg: UpgradeConfig) -> Path:
    """Swap each named expert for its new checkpoint, then retrain only the router."""
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise BarkitError(f"{out}: output already exists (pass --overwrite to replace it)")
    current = cfg.model
    swapped = out.with_name(f".{out.name}.swapped")
    for i, (name, ckpt) in enumerate(parse_named(cfg.replace, "replace")):
        target = swapped.with_name(f"{swapped.name}{i}")
        replace_expert(current, name, ckpt, target, overwrite=True)
        current = str(target)
    try:
        return train_router(cfg, current)
    finally:
        for i in range(len(cfg.replace)):
            shutil.rmtree(swapped.with_name(f"{swapped.name}{i}"), ignore_errors=True)
