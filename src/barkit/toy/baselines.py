"""BAR's baselines in the same harness: dense merging, continued fine-tuning, retraining and BTX.

Each baseline is one call on the toy world's data with the recipe's step budgets, returning
`(checkpoint, cost)`. A cost counts the training that produced the model starting from the world's anchor
(base for retraining), read back from the training outputs: `tokens` (summed `tokens` of metrics.jsonl;
completion tokens for RL), `trainable_params` (largest trainable count of the runs, from the manifests),
`token_params` (sum over runs of tokens x trainable params: the compute proxy), `wall_s` (summed optimizer
step seconds) and `runs`. Each takes the run's `RunContext` and a root to write under; steps go through the
context's `Steps`, so every baseline resumes and skips like the demo.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import matplotlib

from barkit.branch import BranchConfig, branch
from barkit.checkpoint import parent_dirs, read_manifest, write_json
from barkit.compose import ComposeConfig, compose
from barkit.errors import BarkitError
from barkit.merge import MergeConfig, fold_expert, merge
from barkit.moe import parse_named
from barkit.toy.recipe import Recipe, get_recipe
from barkit.toy.run import MODEL_LABELS, STAGE_FILES, RunContext, evaluate_model, label, stage_config
from barkit.toy.steps import Steps
from barkit.train import (
    CheckpointConfig,
    DistributedConfig,
    OptimConfig,
    ScheduleConfig,
    SequenceConfig,
    StageConfig,
)
from barkit.train.metrics import read_metrics

TRAIN_STAGES = ("pretrain", "midtrain", "sft", "rl", "router")
COST_KEYS = ("tokens", "trainable_params", "token_params", "wall_s", "runs")
LABELS = {"merge": "Dense merge (task arithmetic)", "cft": "Continued fine-tuning", "retrain": "Retrain (dense)",
          "btx": "BTX"}
COST_COLUMN = "Cost (tok x param)"


# ---------------------------------------------------------------- costs

def _manifest(ckpt: Path) -> dict:
    manifest = read_manifest(ckpt)
    if manifest is None:
        raise BarkitError(f"{ckpt}: no barkit_manifest.json (not a barkit checkpoint)")
    return manifest


def run_cost(ckpt: str | Path) -> dict:
    """The cost of the one training run that wrote `ckpt` (tokens extrapolated when not every step was logged)."""
    manifest = _manifest(Path(ckpt))
    if manifest.get("stage") not in TRAIN_STAGES or "trainable" not in manifest:
        raise BarkitError(f"{ckpt}: stage '{manifest.get('stage')}' is not a training run")
    rows = [r for r in read_metrics(Path(ckpt) / "metrics.jsonl") if "step_s" in r]
    steps = int(manifest.get("steps") or len(rows))
    scale = steps / len(rows) if rows else 0.0
    tokens = round(sum(r.get("tokens", 0) for r in rows) * scale)
    params = int(manifest["trainable"]["params"])
    return {"tokens": tokens, "trainable_params": params, "token_params": float(tokens) * params,
            "wall_s": sum(r["step_s"] for r in rows) * scale, "runs": 1}


def add_costs(*costs: dict) -> dict:
    """Sum of costs (trainable_params: the largest)."""
    total = {"tokens": 0, "trainable_params": 0, "token_params": 0.0, "wall_s": 0.0, "runs": 0}
    for cost in costs:
        for key in COST_KEYS:
            total[key] = max(total[key], cost[key]) if key == "trainable_params" else total[key] + cost[key]
    return total


def chain_cost(ckpt: str | Path, stop: str | Path) -> dict:
    """Cost of the training runs from `stop` (excluded) to `ckpt`, following each manifest's parent model."""
    stop, path, costs = Path(stop).resolve(), Path(ckpt).resolve(), []
    while path != stop:
        manifest = _manifest(path)
        if manifest.get("stage") not in TRAIN_STAGES:
            raise BarkitError(f"{ckpt}: its lineage reaches {path} (stage '{manifest.get('stage')}') before {stop}")
        costs.append(run_cost(path))
        path = parent_dirs(manifest)["model"].resolve()
    return add_costs(*costs)


def bar_cost(bar_moe: str | Path, finals: dict[str, Path], bar_base: str | Path) -> dict:
    """BAR from the anchor: every domain expert's stages plus the router run."""
    return add_costs(*(chain_cost(p, bar_base) for p in finals.values()), run_cost(bar_moe))


# ---------------------------------------------------------------- shared helpers

def _domains(recipe: Recipe, domains: list[str] | None) -> list[str]:
    chosen = list(domains) if domains is not None else list(recipe.domain_stages)
    unknown = [d for d in chosen if d not in recipe.domain_stages]
    if unknown or not chosen:
        raise BarkitError(f"domains: {unknown or 'none given'}; the recipe has {list(recipe.domain_stages)}")
    return chosen


def _dense_chain(ctx: RunContext, name: str, start: Path, domain: str, out: Path) -> Path:
    """One domain's BAR stages (same data, budgets and general-data mixing as its expert) on a dense model,
    all parameters trainable."""
    model = start
    for stage in ctx.recipe.domain_stages[domain]:
        data = ctx.data(STAGE_FILES[stage].format(domain=domain))
        cfg = stage_config(ctx.recipe, stage, domain, model, data, out / stage, ctx.seed, ctx.progress,
                           ctx.data("general_sft.jsonl"))
        # a dense model has no router to supervise (the recipe's route_supervision is for BAR's experts)
        cfg = dataclasses.replace(cfg, trainable=["all"], expert_name=None, route_supervision=0.0,
                                  distributed=DistributedConfig(threads=ctx.threads))
        model = ctx.train_step(f"{name}/{stage}", cfg)
    return model


def _dense_stage(ctx: RunContext, stage: str, model: Path, data: list[str], out: Path, steps: int, lr: float,
                 batch_size: int, **extra) -> StageConfig:
    """A dense baseline run: all parameters (unless `extra` says otherwise), cosine schedule, resumable."""
    settings = dict(trainable=["all"], seed=ctx.seed, progress=ctx.progress, overwrite=True,
                    sequences=SequenceConfig(seq_len=ctx.recipe.seq_len), optim=OptimConfig(lr=lr),
                    schedule=ScheduleConfig(kind="cosine", warmup_ratio=0.05),
                    checkpoint=CheckpointConfig(save_every=max(25, steps // 4), resume=True),
                    distributed=DistributedConfig(threads=ctx.threads))
    return StageConfig(stage=stage, model=str(model), data=data, out=str(out), steps=steps, batch_size=batch_size,
                       **{**settings, **extra})


# ---------------------------------------------------------------- baselines

def dense_merge(ctx: RunContext, out: str | Path, bar_base: str | Path, finals: dict[str, Path], *,
                lambdas: Literal["steps", "equal"] | dict[str, float] = "steps") -> tuple[Path, dict]:
    """Merge-to-Learn: task-arithmetic merge of the folded (dense) BAR experts into the dense anchor.

    Task vectors are relative to BAR-2x-Base folded through expert 1 (base FFN, anchor's shared tensors), the
    model every expert started from. lambda: each expert's share of training steps (anchor SFT included), 1
    each ("equal"), or given per domain. Cost: the experts' training (no new training; `runs` counts theirs).
    """
    bar_base, out = Path(bar_base), Path(out) / "merge"
    folded = {}
    for name, src in {"pretrained": bar_base, **finals}.items():
        folded[name] = ctx.steps.run(f"baselines/merge/fold-{name}", out / "folded" / name, {"moe": str(src)},
                                     lambda s=src, o=out / "folded" / name: fold_expert(s, o, 1, overwrite=True))
    weights = _lambdas(lambdas, finals)  # None: merge's steps heuristic reads the manifests' lineage
    cfg = MergeConfig(method="task_arithmetic", general=str(ctx.world / "anchor"),
                      pretrained=str(folded["pretrained"]),
                      models=[f"{d}={folded[d]}" + (f":{weights[d]!r}" if weights else "") for d in finals],
                      out=str(out / "model"), lambda_heuristic="steps", overwrite=True)
    model = ctx.steps.run("baselines/merge/merge", out / "model", {"cfg": cfg}, lambda: merge(cfg))
    return model, add_costs(*(chain_cost(p, bar_base) for p in finals.values()))


def _lambdas(lambdas, finals: dict[str, Path]) -> dict[str, float] | None:
    if isinstance(lambdas, dict):
        missing = sorted(set(finals) - set(lambdas))
        if missing:
            raise BarkitError(f"lambdas: no value for domain '{missing[0]}'")
        return {d: float(lambdas[d]) for d in finals}
    return {d: 1.0 for d in finals} if lambdas == "equal" else None


def continued_finetuning(ctx: RunContext, out: str | Path, *, domains: list[str] | None = None) -> tuple[Path, dict]:
    """The dense anchor fine-tuned on each domain in turn (every stage, all parameters): it can forget."""
    out = Path(out) / "cft"
    model = ctx.world / "anchor"
    for i, domain in enumerate(_domains(ctx.recipe, domains)):
        model = _dense_chain(ctx, f"baselines/cft/{i}-{domain}", model, domain, out / f"{i}-{domain}")
    return model, chain_cost(model, ctx.world / "anchor")


def _budget(recipe: Recipe, domain: str, stage: str) -> tuple[int, int]:
    """(steps, batch size) a domain's expert trains `stage` with: the demo's own stage config decides."""
    cfg = stage_config(recipe, stage, domain, Path("."), Path("."), Path("."))
    return int(cfg.steps), int(cfg.batch_size)


def retrain_steps(recipe: Recipe, domains: list[str]) -> tuple[int, int]:
    """(midtrain steps, SFT steps at the anchor's batch size) for retraining on `domains`: the experts' and the
    anchor's budgets in examples, so retraining sees as many examples as BAR's runs did in total.

    >>> from dataclasses import replace
    >>> from barkit.toy.recipe import Budget, get_recipe
    >>> recipe = replace(get_recipe("quick"), anchor_sft=Budget(60, 2e-3, 32), sft=Budget(40, 2e-3, 16),
    ...                  domain_step_scale={"tool_use": 0.5})
    >>> retrain_steps(recipe, ["tool_use", "safety"])  # (60*32 + (20 + 40)*16) / 32
    (0, 90)
    """
    mid_steps, examples = 0, recipe.anchor_sft.steps * recipe.anchor_sft.batch_size
    for domain in domains:
        stages = recipe.domain_stages[domain]
        if "midtrain" in stages:
            mid_steps += _budget(recipe, domain, "midtrain")[0]
        if "sft" in stages:
            steps, batch = _budget(recipe, domain, "sft")
            examples += steps * batch
    return mid_steps, math.ceil(examples / recipe.anchor_sft.batch_size)


def retrain(ctx: RunContext, out: str | Path, *, domains: list[str] | None = None,
            midtrain: bool = True) -> tuple[Path, dict]:
    """The base post-trained again on everything: midtraining on the union of the domains' midtraining text
    (optional), then one SFT run on the union of general and all domain SFT chats (dense, all parameters)."""
    out, chosen, recipe = Path(out) / "retrain", _domains(ctx.recipe, domains), ctx.recipe
    mid_steps, sft_steps = retrain_steps(recipe, chosen)
    model = ctx.world / "base"
    mid_data = [str(ctx.data(f"{d}_midtrain.jsonl")) for d in chosen if "midtrain" in recipe.domain_stages[d]]
    if midtrain and mid_data:
        b = recipe.midtrain
        cfg = _dense_stage(ctx, "midtrain", model, mid_data, out / "midtrain", mid_steps, b.lr, b.batch_size)
        model = ctx.train_step("baselines/retrain/midtrain", cfg)
    sft_data = [str(ctx.data("general_sft.jsonl"))]
    sft_data += [str(ctx.data(f"{d}_sft.jsonl")) for d in chosen if "sft" in recipe.domain_stages[d]]
    b = recipe.anchor_sft
    cfg = _dense_stage(ctx, "sft", model, sft_data, out / "sft", sft_steps, b.lr, b.batch_size)
    model = ctx.train_step("baselines/retrain/sft", cfg)
    return model, chain_cost(model, ctx.world / "base")


def btx(ctx: RunContext, out: str | Path, *, domains: list[str] | None = None,
        freeze_anchor: bool = False) -> tuple[Path, dict]:
    """Branch-Train-MiX: dense copies of the anchor trained per domain (all parameters, the experts' stages),
    their FFNs mixed into an (N+1)-expert MoE (anchor FFN = expert 0), every other tensor averaged over the
    anchor and the domain models, router random; then the whole MoE fine-tuned on the union of the SFT data
    for the router's budget (`freeze_anchor` keeps expert 0 and router row 0 fixed)."""
    out, chosen, anchor = Path(out) / "btx", _domains(ctx.recipe, domains), ctx.world / "anchor"
    dense = {d: _dense_chain(ctx, f"baselines/btx/dense/{d}", anchor, d, out / "dense" / d) for d in chosen}
    parts = {d: _btx_part(ctx.steps, anchor, dense[d], out / "parts" / d, ctx.seed + i)
             for i, d in enumerate(chosen, start=1)}
    compose_cfg = ComposeConfig(anchor=str(anchor), experts=[f"{d}={p}" for d, p in parts.items()],
                                out=str(out / "composed"), shared="mean", overwrite=True)
    composed = ctx.steps.run("baselines/btx/compose", out / "composed", {"cfg": compose_cfg},
                             lambda: compose(compose_cfg))
    n = len(chosen)
    trainable = ([f"expert:{i}" for i in range(1, n + 1)] + [f"router:{i}" for i in range(1, n + 1)]
                 + ["embeddings", "lm_head", "attention", "norms"]) if freeze_anchor else ["all"]
    b = ctx.recipe.router
    data = [str(ctx.data("general_sft.jsonl"))] + [str(ctx.data(f"{d}_sft.jsonl")) for d in chosen]
    cfg = _dense_stage(ctx, "sft", composed, data, out / "model", b.steps, b.lr, b.batch_size, trainable=trainable,
                       allow_anchor_updates=not freeze_anchor)
    model = ctx.train_step("baselines/btx/finetune", cfg)
    return model, add_costs(*(chain_cost(p, anchor) for p in dense.values()), run_cost(model))


def _btx_part(steps: Steps, anchor: Path, dense: Path, out: Path, seed: int) -> Path:
    """A 2-expert checkpoint compose accepts: expert 0 = the anchor's FFN, expert 1 = the domain model's FFN,
    shared tensors = the domain model's (so compose's shared=mean averages the domain models).

    Built from public operations: branch(domain, anchor) puts the anchor FFN in expert 1 next to the domain's
    shared tensors; folding that expert gives a dense (anchor FFN, domain shared) model; branching it with the
    domain model as base gives the layout compose wants.
    """
    swap = BranchConfig(anchor=str(dense), base=str(anchor), out=str(out / "swap"), seed=seed, overwrite=True)
    steps.run(f"baselines/btx/parts/{out.name}/swap", out / "swap", {"cfg": swap}, lambda: branch(swap))
    steps.run(f"baselines/btx/parts/{out.name}/fold", out / "mixed", {"moe": swap.out},
              lambda: fold_expert(out / "swap", out / "mixed", 1, overwrite=True))
    final = BranchConfig(anchor=str(out / "mixed"), base=str(dense), out=str(out / "2x"), seed=seed, overwrite=True)
    return steps.run(f"baselines/btx/parts/{out.name}/2x", out / "2x", {"cfg": final}, lambda: branch(final))


# ---------------------------------------------------------------- scenario, table, plot

def add_domain_scenario(expert_costs: dict[str, dict], router_cost: dict, retrain_cost: dict, recipe: Recipe,
                        like: str | None = None) -> dict:
    """Cumulative token x param cost of adding one more domain (budgeted like domain `like`, default the last):
    BAR trains one expert and the router again; retraining runs everything again with one more domain (its
    cost scaled by its budget in steps, per phase run on the same dense model)."""
    domains = list(expert_costs)
    like = like or domains[-1]
    if like not in expert_costs:
        raise BarkitError(f"like: '{like}' is not one of the measured domains {domains}")
    bar_now = add_costs(*expert_costs.values(), router_cost)["token_params"]
    extended = [*domains, like]
    mid_now, sft_now = retrain_steps(recipe, domains)
    mid_new, sft_new = retrain_steps(recipe, extended)
    scale = (mid_new + sft_new) / (mid_now + sft_now)
    bar_new = expert_costs[like]["token_params"] + router_cost["token_params"]
    return {"domains": domains, "new_domain_like": like, "bar": {"now": bar_now, "after": bar_now + bar_new},
            "retrain": {"now": retrain_cost["token_params"],
                        "after": retrain_cost["token_params"] * (1 + scale)}}


def cost_columns(costs: dict[str, dict]) -> dict[str, dict[str, str]]:
    """`markdown_table(..., extra_columns=...)` cells: tokens x trainable parameters per model."""
    return {label: {COST_COLUMN: f"{c['token_params']:.2e}"} for label, c in costs.items()}


def plot_score_vs_cost(results: dict[str, dict], costs: dict[str, dict], path: str | Path,
                       title: str = "Overall score vs training cost") -> Path:
    """Overall score against tokens x trainable params (log scale) for every model that has a cost."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend

    points = [(label, costs[label]["token_params"], results[label]["overall"]) for label in results
              if label in costs and results[label].get("overall") is not None]
    if not points:
        raise BarkitError("plot_score_vs_cost: no model has both a score and a cost")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, x, y in points:
        ax.scatter([max(x, 1.0)], [y])
        ax.annotate(name, (max(x, 1.0), y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training cost: tokens x trainable parameters (from the anchor)")
    ax.set_ylabel("overall score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def run_baselines(ctx: RunContext, bar_base: Path, finals: dict[str, Path]) -> dict[str, tuple[Path, dict]]:
    """All four baselines under `ROOT/baselines`, keyed like `LABELS` (the demo's `--baselines`)."""
    out, domains = ctx.root / "baselines", list(finals)
    return {"merge": dense_merge(ctx, out, bar_base, finals),
            "cft": continued_finetuning(ctx, out, domains=domains),
            "retrain": retrain(ctx, out, domains=domains),
            "btx": btx(ctx, out, domains=domains)}


def baseline_rows(ctx: RunContext, bar_base: Path, finals: dict[str, Path], moe: Path, results: dict,
                  title: str = "") -> tuple[dict, dict]:
    """Train and evaluate the baselines; add their rows to `results`; return (costs per row, add-a-domain)."""
    costs: dict = {}
    for key, (path, cost) in run_baselines(ctx, bar_base, finals).items():
        results[LABELS[key]] = evaluate_model(ctx, LABELS[key], path, ctx.root / "eval" / f"baseline-{key}")
        costs[LABELS[key]] = cost
    expert_costs = {d: chain_cost(p, bar_base) for d, p in finals.items()}
    costs.update({label(d): c for d, c in expert_costs.items()})
    costs[MODEL_LABELS["composed"]] = add_costs(*expert_costs.values())
    costs[MODEL_LABELS["moe"]] = bar_cost(moe, finals, bar_base)
    plot_score_vs_cost(results, costs, ctx.root / "score_vs_cost.png",
                       title=f"Score vs training cost on the toy world {title}".strip())
    return costs, add_domain_scenario(expert_costs, run_cost(moe), costs[LABELS["retrain"]], ctx.recipe)


@dataclass
class BaselineConfig:
    method: Literal["merge", "cft", "retrain", "btx"] = field(metadata={"help": "which baseline to train"})
    world: str = field(metadata={"help": "toy world directory (data/, base/, anchor/)"})
    out: str = field(metadata={"help": "output root (the baseline writes OUT/METHOD/...)"})
    profile: Literal["quick", "default", "smoke"] = field(default="quick", metadata={"help": "recipe budgets"})
    domains: list[str] | None = field(default=None, metadata={"help": "domains, in order (default: all)"})
    bar_base: str | None = field(default=None, metadata={"help": "merge: the BAR-2x-Base checkpoint"})
    experts: list[str] = field(default_factory=list, metadata={"help": "merge: final experts as NAME=CKPT"})
    lambdas: Literal["steps", "equal"] = field(default="steps", metadata={"help": "merge: lambda heuristic"})
    midtrain: bool = field(default=True, metadata={"help": "retrain: midtrain on the domains' text first"})
    freeze_anchor: bool = field(default=False, metadata={"help": "btx: keep expert 0 and router row 0 fixed"})
    seed: int = 0
    threads: int | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.method == "merge" and (not self.bar_base or not self.experts):
            raise BarkitError("config keys 'bar_base', 'experts': required for method merge")


def run_baseline(cfg: BaselineConfig, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """`barkit baseline`: one baseline; writes OUT/METHOD/cost.json next to the model and returns both."""
    cfg.validate()
    out = Path(cfg.out)
    ctx = RunContext(world=Path(cfg.world), root=out, recipe=get_recipe(cfg.profile), steps=Steps(out, log),
                     seed=cfg.seed, progress=cfg.progress, threads=cfg.threads)
    if cfg.method == "merge":
        finals = {name: Path(p) for name, p in parse_named(cfg.experts, "experts")}
        path, cost = dense_merge(ctx, out, Path(cfg.bar_base), finals, lambdas=cfg.lambdas)
    elif cfg.method == "cft":
        path, cost = continued_finetuning(ctx, out, domains=cfg.domains)
    elif cfg.method == "retrain":
        path, cost = retrain(ctx, out, domains=cfg.domains, midtrain=cfg.midtrain)
    else:
        path, cost = btx(ctx, out, domains=cfg.domains, freeze_anchor=cfg.freeze_anchor)
    write_json(out / cfg.method / "cost.json", {"model": str(path), **cost})
    return path, cost
