"""One run on the toy world: its context, and the steps both the demo and the baselines are made of.

A `RunContext` carries what every step needs (the world, the run's output root, the recipe, seed, threads,
progress, and the step cache), so the demo and the baselines pass one object instead of long argument lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from barkit.errors import BarkitError
from barkit.eval.harness import EvalConfig, evaluate, load_results
from barkit.toy.recipe import Recipe, stage_budget
from barkit.toy.steps import Steps
from barkit.train import (
    CheckpointConfig,
    DistributedConfig,
    MixtureConfig,
    OptimConfig,
    RLConfig,
    ScheduleConfig,
    SequenceConfig,
    StageConfig,
    train,
)

STAGE_FILES = {"midtrain": "{domain}_midtrain.jsonl", "sft": "{domain}_sft.jsonl", "rl": "{domain}_rl.jsonl"}
DOMAIN_CATEGORY = {"math": "math", "code": "code", "tool_use": "tool_use", "safety": "safety"}
MODEL_LABELS = {"anchor": "Anchor (dense)", "math": "2x-Math", "code": "2x-Code", "tool_use": "2x-Tool-Use",
                "safety": "2x-Safety", "composed": "BAR-5x (router untrained)", "moe": "BAR-5x"}


def label(domain: str) -> str:
    """A domain expert's row name in the tables."""
    return MODEL_LABELS.get(domain, f"2x-{domain}")


@dataclass(frozen=True)
class RunContext:
    world: Path  # a built toy world: data/, base/, anchor/
    root: Path  # the run's output directory
    recipe: Recipe
    steps: Steps | None  # None only while the context travels to a worker process
    seed: int = 0
    progress: bool = True
    threads: int | None = None  # torch threads per training job (None: every core)

    def data(self, name: str) -> Path:
        path = self.world / "data" / name
        if not path.is_file():
            raise BarkitError(f"{path}: data file not found (build the world first)")
        return path

    def train_step(self, name: str, cfg: StageConfig) -> Path:
        """Train `cfg` once (skipped when its output is up to date)."""
        return self.steps.run(name, Path(cfg.out), {"cfg": cfg, "parent": cfg.model}, lambda: train(cfg))


def heldout_rl_prompts(world: Path, domain: str, out: Path, limit: int = 64) -> Path:
    """The domain's held-out eval items as RL prompts, so the RL curve is measured on unseen prompts."""
    rows = []
    for line in (world / "data" / "eval" / f"{DOMAIN_CATEGORY[domain]}.jsonl").read_text().splitlines()[:limit]:
        item = json.loads(line)
        rows.append({"prompt": item.pop("messages"), **{k: v for k, v in item.items()
                                                          if k not in ("id", "category", "benchmark")}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return out


def stage_config(recipe: Recipe, stage: str, domain: str, model: Path, data: Path, out: Path, seed: int = 0,
                 progress: bool = False, general: Path = Path("."), heldout: Path | None = None,
                 threads: int | None = None) -> StageConfig:
    """A domain expert's stage as the recipe budgets it (the baselines reuse it for their dense runs)."""
    budget = stage_budget(recipe, domain, stage)
    sections: dict = {}
    if stage == "sft":
        sections["mixture"] = MixtureConfig(general_data=[str(general)], general_ratio=recipe.general_ratio)
    if stage == "rl":
        sections["rl"] = RLConfig(prompts_per_step=budget.prompts_per_step, num_generations=budget.num_generations,
                                  max_new_tokens=budget.max_new_tokens, eval_data=str(heldout or data),
                                  eval_max_prompts=64)
        schedule = ScheduleConfig(kind="constant", warmup_ratio=0.0)
    else:
        schedule = ScheduleConfig(kind="cosine", warmup_ratio=0.05)
    return StageConfig(stage=stage, model=str(model), data=[str(data)], out=str(out), expert_name=domain,
                       steps=budget.steps, batch_size=budget.batch_size, seed=seed, progress=progress,
                       overwrite=True, route_supervision=recipe.route_supervision if stage in ("midtrain", "sft")
                       else 0.0, optim=OptimConfig(lr=budget.lr, shared_lr_scale=recipe.shared_lr_scale),
                       schedule=schedule, sequences=SequenceConfig(seq_len=recipe.seq_len),
                       checkpoint=CheckpointConfig(save_every=max(25, budget.steps // 4), resume=True),
                       distributed=DistributedConfig(threads=threads), **sections)


def domain_stage_config(ctx: RunContext, stage: str, domain: str, model: Path, out: Path) -> StageConfig:
    """`stage_config` for one of the world's domains, its data files and held-out RL prompts."""
    heldout = (heldout_rl_prompts(ctx.world, domain, ctx.root / "rl_heldout" / f"{domain}.jsonl")
               if stage == "rl" else None)
    return stage_config(ctx.recipe, stage, domain, model, ctx.world / "data" / STAGE_FILES[stage].format(domain=domain),
                        out, ctx.seed, ctx.progress, ctx.world / "data" / "general_sft.jsonl", heldout, ctx.threads)


def train_expert(ctx: RunContext, bar_base: Path, domain: str) -> dict[str, Path]:
    """Take one domain from BAR-2x-Base through its stages; returns {stage: checkpoint}."""
    outputs, model = {}, bar_base
    for stage in ctx.recipe.domain_stages[domain]:
        out = ctx.root / "experts" / domain / stage
        cfg = domain_stage_config(ctx, stage, domain, model, out)
        ctx.steps.run(f"experts/{domain}/{stage}", out, {"cfg": cfg, "parent": str(model)}, lambda c=cfg: train(c))
        outputs[stage] = model = out
    return outputs


def evaluate_model(ctx: RunContext, name: str, model: Path, out: Path, categories: list[str] | None = None) -> dict:
    """The toy suite's per-category scores for `model` (evaluated once; results read back)."""
    cfg = EvalConfig(model=str(model), suite="toy", world=str(ctx.world), out=str(out), name=name,
                     categories=categories, max_new_tokens=ctx.recipe.eval_max_new_tokens, batch_size=64,
                     limit=ctx.recipe.eval_limit)
    ctx.steps.run(f"eval/{out.name}", out / "results.json", {"cfg": cfg}, lambda: evaluate(cfg, show_progress=False))
    return load_results(str(out))
