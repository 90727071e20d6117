"""`barkit demo`: the whole BAR recipe on the toy world, ending with a table shaped like the BAR model card.

Read `run_demo` top to bottom: world -> branch -> each domain expert through its stages -> compose -> router
training -> evaluation (-> baselines). Every step goes through the run's `Steps`, so a crashed demo resumes
and a re-run redoes only what changed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from barkit import kernels
from barkit.branch import BranchConfig, branch
from barkit.checkpoint import write_json
from barkit.compose import ComposeConfig, compose
from barkit.errors import BarkitError
from barkit.eval.report import markdown_table, plot_categories, plot_routing
from barkit.route import RouteConfig, train_router
from barkit.toy import baselines
from barkit.toy.recipe import Recipe, RLBudget, get_recipe, stage_budget
from barkit.toy.run import DOMAIN_CATEGORY, MODEL_LABELS, RunContext, evaluate_model, label, train_expert
from barkit.toy.steps import Steps, Workers, worker_plan
from barkit.toy.world.build import WorldConfig, build_world, world_key
from barkit.train import MixtureConfig, OptimConfig, SequenceConfig
from barkit.train.stages import available_cores


@dataclass
class DemoConfig:
    out: str = field(default="runs/demo", metadata={"help": "output directory"})
    profile: Literal["quick", "default", "smoke"] = field(
        default="quick", metadata={"help": "quick (~4 min on 2 cores), default (~21 min), "
                                           "smoke (tests: every path, no learning)"})
    seed: int = 0
    domains: list[str] = field(default_factory=lambda: ["math", "code", "tool_use", "safety"])
    eval_stages: bool = field(default=False, metadata={"help": "also evaluate each intermediate stage"})
    baselines: bool = field(default=False, metadata={"help": "add merging / CFT / retraining baselines"})
    shared_lr_scale: float | None = field(default=None, metadata={
        "help": "lr multiplier for shared tensors in the domain stages (default: the recipe's)"})
    route_supervision: float | None = field(default=None, metadata={
        "help": "router loss weight in midtrain/sft: domain tokens to the expert, general ones to the anchor "
                "(default: the recipe's)"})
    compose_shared: Literal["mean", "anchor", "sum", "ties"] | None = field(default=None, metadata={
        "help": "how compose merges shared tensors (see barkit compose --help; default: the recipe's)"})
    workers: int | None = field(default=None, metadata={
        "help": "domain experts trained (and models evaluated) side by side, each in its own process with "
                "cores/workers threads (default: one per core; 1: one after another in this process)"})
    progress: bool = True

    def validate(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise BarkitError("config key 'workers': must be >= 1")


# Rough cost of one row per stage, in SFT chats: a mid-training row is a packed seq_len window (~3 chats); an RL
# rollout is generated token by token and, for code, judged in two sandboxes (quick, 2 cores: code's 256
# rollouts took 19 s, its 4,160 SFT chats 15 s).
ROW_COST = {"midtrain": 3, "sft": 1, "rl": 4}


def _relative_cost(recipe: Recipe, domain: str) -> float:
    """A domain's rough training cost in SFT chats, to start the longest first.

    Side by side on two workers the order decides the wall time: quick, seed 0, math (50 s), tool use (63 s),
    code (41 s) and safety (18 s) started in this order finish in 91 s; with safety before code, in 104 s.
    """
    total = 0.0
    for stage in recipe.domain_stages[domain]:
        b = stage_budget(recipe, domain, stage)
        rows = b.prompts_per_step * b.num_generations if isinstance(b, RLBudget) else b.batch_size
        total += b.steps * rows * ROW_COST[stage]
    return total


def _worker_plan_here(cfg: DemoConfig) -> tuple[int, int]:
    workers, threads = worker_plan(cfg.workers, len(cfg.domains), available_cores())
    return workers, threads or available_cores()


def build_world_step(ctx: RunContext, cfg: DemoConfig) -> Path:
    world_cfg = WorldConfig(out=str(ctx.world), profile=cfg.profile, seed=cfg.seed, progress=cfg.progress)
    # The plan holds what the world is built from (the recipe's shape and budgets), not only the profile's
    # name: a release that reshapes a profile rebuilds its world instead of branching a stale one.
    ctx.steps.run("world", ctx.world / "anchor", {"cfg": world_cfg, "world": world_key(world_cfg, ctx.recipe)},
                  lambda: build_world(world_cfg, log=ctx.steps.log))
    return ctx.world


def branch_step(ctx: RunContext) -> Path:
    """BAR-2x-Base: expert 0 = the anchor's FFN (frozen), expert 1 = the base's FFN."""
    bar_base = ctx.root / "bar-2x-base"
    cfg = BranchConfig(anchor=str(ctx.world / "anchor"), base=str(ctx.world / "base"), out=str(bar_base),
                       seed=ctx.seed, overwrite=True)
    return ctx.steps.run("branch", bar_base, {"cfg": cfg}, lambda: branch(cfg))


def train_experts(ctx: RunContext, bar_base: Path, domains: list[str], workers: Workers) -> dict[str, dict[str, Path]]:
    """Every domain's expert, side by side (longest first); the same checkpoints as one after another with
    the workers' thread count."""
    order = sorted(domains, key=lambda d: -_relative_cost(ctx.recipe, d))
    done = workers.run(ctx, {d: (train_expert, (bar_base, d)) for d in order})
    return {d: done[d] for d in domains}


def compose_step(ctx: RunContext, bar_base: Path, finals: dict[str, Path]) -> Path:
    composed = ctx.root / "bar-moe-composed"
    cfg = ComposeConfig(anchor=str(bar_base), experts=[f"{d}={p}" for d, p in finals.items()], out=str(composed),
                        shared=ctx.recipe.compose_shared, overwrite=True)
    return ctx.steps.run("compose", composed, {"cfg": cfg}, lambda: compose(cfg))


def route_step(ctx: RunContext, composed: Path, domains: list[str]) -> Path:
    """Train only the router on a stratified sample of general + every domain's SFT chats."""
    moe = ctx.root / "bar-moe"
    data = [str(ctx.world / "data" / f) for f in ["general_sft.jsonl", *(f"{d}_sft.jsonl" for d in domains)]]
    b = ctx.recipe.router
    cfg = RouteConfig(model=str(composed), data=data, out=str(moe),
                      mixture=MixtureConfig(sample_fraction=ctx.recipe.router_fraction), steps=b.steps,
                      optim=OptimConfig(lr=b.lr), batch_size=b.batch_size,
                      sequences=SequenceConfig(seq_len=ctx.recipe.seq_len), seed=ctx.seed, progress=ctx.progress,
                      overwrite=True)
    return ctx.steps.run("route", moe, {"cfg": cfg}, lambda: train_router(cfg))


def evaluate_all(ctx: RunContext, models: dict[str, Path], experts: dict[str, dict[str, Path]], eval_stages: bool,
                 workers: Workers) -> dict[str, dict]:
    """Every model of the table (the MoEs first: they are the slowest), plus each intermediate stage on its own
    category and the general ones it must keep when `eval_stages`."""
    evals = ctx.root / "eval"
    jobs = {name: (evaluate_model, (name, path, evals / folder)) for name, (path, folder) in models.items()}
    if eval_stages:
        for d, stages in experts.items():
            for stage, path in list(stages.items())[:-1]:
                name = f"{label(d)} after {stage}"
                jobs[name] = (evaluate_model, (name, path, evals / f"2x-{d}-{stage}",
                                               [DOMAIN_CATEGORY[d], "knowledge", "reasoning", "chat"]))
    return workers.run(ctx, jobs)


def report(ctx: RunContext, cfg: DemoConfig, results: dict, costs: dict) -> str:
    """table.md, table.png and routing.png; returns the table."""
    table = markdown_table(results, baselines.cost_columns(costs) if costs else None) + f"\n{kernels.describe()}\n"
    (ctx.root / "table.md").write_text(table)
    plot_categories(results, ctx.root / "table.png", title=f"BAR on the toy world ({cfg.profile} profile)")
    routing = results[MODEL_LABELS["moe"]].get("routing")
    if routing:
        plot_routing(routing["shares"], routing["experts"], ctx.root / "routing.png",
                     title="BAR-5x: routing share per evaluation category")
    return table


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the demo; returns its summary (also written to OUT/summary.json)."""
    root = Path(cfg.out)
    overrides = {k: getattr(cfg, k) for k in ("shared_lr_scale", "route_supervision", "compose_shared")
                 if getattr(cfg, k) is not None}
    ctx = RunContext(world=root / "world", root=root, recipe=dataclasses.replace(get_recipe(cfg.profile), **overrides),
                     steps=Steps(root, log), seed=cfg.seed, progress=cfg.progress and _worker_plan_here(cfg)[0] == 1)
    start = time.perf_counter()
    with Workers(cfg.workers) as workers:
        build_world_step(dataclasses.replace(ctx, progress=cfg.progress), cfg)
        bar_base = branch_step(ctx)

        experts_start = time.perf_counter()
        experts = train_experts(ctx, bar_base, cfg.domains, workers)
        experts_wall = time.perf_counter() - experts_start
        finals = {d: stages[ctx.recipe.domain_stages[d][-1]] for d, stages in experts.items()}

        composed = compose_step(ctx, bar_base, finals)
        moe = route_step(dataclasses.replace(ctx, progress=cfg.progress), composed, cfg.domains)

        evals_start = time.perf_counter()
        table_models = {MODEL_LABELS["moe"]: (moe, "bar-moe"), MODEL_LABELS["composed"]: (composed, "bar-moe-composed"),
                        **{label(d): (finals[d], f"2x-{d}") for d in experts},
                        MODEL_LABELS["anchor"]: (ctx.world / "anchor", "anchor")}
        done = evaluate_all(ctx, table_models, experts, cfg.eval_stages, workers)
        evals_wall = time.perf_counter() - evals_start
    order = [MODEL_LABELS["anchor"], *(label(d) for d in experts), MODEL_LABELS["composed"], MODEL_LABELS["moe"]]
    results = {name: done[name] for name in order}

    costs, add_domain = ({}, None)
    if cfg.baselines:
        costs, add_domain = baselines.baseline_rows(dataclasses.replace(ctx, progress=cfg.progress), bar_base,
                                                    finals, moe, results, title=f"({cfg.profile} profile)")
    table = report(ctx, cfg, results, costs)
    summary = {"profile": cfg.profile, "seed": cfg.seed, "table": table, "wall_s": time.perf_counter() - start,
               "step_seconds": ctx.steps.timings, "experts_wall_s": experts_wall, "evals_wall_s": evals_wall,
               "expert_workers": dict(zip(("processes", "threads"), _worker_plan_here(cfg))),
               "scores": {k: {"overall": v["overall"], **v["categories"]} for k, v in results.items()},
               **({"costs": costs, "add_domain": add_domain} if costs else {})}
    write_json(root / "summary.json", summary)
    log("\n" + table)
    log(f"wrote {root / 'table.md'}, {root / 'table.png'}, {root / 'routing.png'}")
    return summary
