"""`barkit demo`: the whole BAR recipe on the toy world, ending with a table shaped like the BAR model card.

Phases: world -> branch -> each domain expert through its stages -> compose -> router training -> evaluation.
Every step writes its own directory and a plan record (`.demo/STEP.json`, the hash of what it was asked to do);
a re-run skips each step whose output exists and whose plan is unchanged, so a crashed demo resumes, and a
copy of a demo directory rerun with one knob changed redoes only the steps that knob reaches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from barkit.checkpoint import write_json
from barkit.recipe import Recipe, get_recipe, stage_budget
from barkit.train.stages import available_cores

STAGE_FILES = {"midtrain": "{domain}_midtrain.jsonl", "sft": "{domain}_sft.jsonl", "rl": "{domain}_rl.jsonl"}
DOMAIN_CATEGORY = {"math": "math", "code": "code", "tool_use": "tool_use", "safety": "safety"}
MODEL_LABELS = {"anchor": "Anchor (dense)", "math": "2x-Math", "code": "2x-Code", "tool_use": "2x-Tool-Use",
                "safety": "2x-Safety", "composed": "BAR-5x (router untrained)", "moe": "BAR-5x"}


@dataclass
class DemoConfig:
    out: str = field(default="runs/demo", metadata={"help": "output directory"})
    profile: Literal["quick", "default", "smoke"] = field(
        default="quick", metadata={"help": "quick (~3 min on 2 cores), default (~19 min; 13 with the world built), "
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


class Steps:
    """Runs named steps once: skipped when the output exists and the recorded plan is unchanged."""

    def __init__(self, root: Path, log: Callable[[str], None]):
        self.root, self.log = root, log
        self.timings: dict[str, float] = {}
        self.produced: dict[str, str] = {}  # output path -> digest of the step that made it
        (root / ".demo").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, output: Path, plan: dict, fn: Callable[[], object]) -> Path:
        # A step's plan includes the digests of the steps whose outputs it names, so redoing a step redoes
        # everything downstream (a retrained router re-runs its evaluation). Paths under the demo directory
        # are hashed relative to it, so a copied demo directory stays up to date: copy a finished run, change
        # one knob, and only the steps it reaches are redone.
        text = json.dumps({"plan version": PLAN_VERSION, **_plain(plan)}, sort_keys=True, default=str)
        inputs = {path: d for path, d in sorted(self.produced.items()) if path != str(output) and path in text}
        digest = _sha256((text + json.dumps(inputs)).replace(f"{self.root}/", "<demo>/"))
        self.produced[str(output)] = digest
        record = self.root / ".demo" / f"{name.replace('/', '__')}.json"
        done = record.is_file() and json.loads(record.read_text()).get("plan") == digest
        if done and output.exists():
            self.log(f"[demo] {name}: up to date")
            return output
        self.log(f"[demo] {name} ...")
        start = time.perf_counter()
        fn()
        self.timings[name] = time.perf_counter() - start
        write_json(record, {"plan": digest, "seconds": self.timings[name]})
        self.log(f"[demo] {name}: {self.timings[name]:.1f}s")
        return output


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Config fields that say how a step runs, not what it computes (a thread count can change float rounding, as
# it can between machines; it never redoes a finished step).
COSMETIC_KEYS = frozenset({"progress", "threads", "workers"})
# Settings left at their declared default are not part of a plan, so a release that adds a setting (whose
# default keeps the old behaviour) does not redo finished steps. A release that changes what a default
# computes bumps PLAN_VERSION instead, which redoes every step once.
PLAN_VERSION = 2


def _plain(value):
    """A plan as JSON-able data: dataclasses as dicts without their cosmetic fields (a demo re-run with
    --progress false must not redo the steps) and without fields left at their defaults."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in COSMETIC_KEYS and not _is_default(f, getattr(value, f.name))}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_default(f: dataclasses.Field, value) -> bool:
    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


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


def _stage_config(recipe: Recipe, stage: str, domain: str, model: Path, data: Path, out: Path, seed: int,
                  progress: bool, general: Path, heldout: Path | None = None, threads: int | None = None):
    from barkit.train import RLConfig, StageConfig

    budget = stage_budget(recipe, domain, stage)
    extra: dict = {}
    if stage == "sft":
        extra = dict(general_data=[str(general)], general_ratio=recipe.general_ratio)
    if stage == "rl":
        rl = budget
        extra = dict(rl=RLConfig(prompts_per_step=rl.prompts_per_step, num_generations=rl.num_generations,
                                 max_new_tokens=rl.max_new_tokens, eval_data=str(heldout or data),
                                 eval_max_prompts=64),
                     schedule="constant", warmup_ratio=0.0)
    elif stage in ("midtrain", "sft"):
        extra.update(schedule="cosine", warmup_ratio=0.05)
    return StageConfig(stage=stage, model=str(model), data=[str(data)], out=str(out), expert_name=domain,
                       steps=budget.steps, lr=budget.lr, batch_size=budget.batch_size, seq_len=recipe.seq_len,
                       seed=seed, progress=progress, overwrite=True, save_every=max(25, budget.steps // 4),
                       resume=True, shared_lr_scale=recipe.shared_lr_scale, threads=threads,
                       route_supervision=recipe.route_supervision if stage in ("midtrain", "sft") else 0.0, **extra)


def train_expert(steps: Steps, root: Path, world: Path, bar_base: Path, domain: str, recipe: Recipe, seed: int,
                 progress: bool, threads: int | None = None) -> dict[str, Path]:
    """Take one domain from BAR-2x-Base through its stages; returns {stage: checkpoint}."""
    from barkit.train import train

    outputs, model = {}, bar_base
    for stage in recipe.domain_stages[domain]:
        data = world / "data" / STAGE_FILES[stage].format(domain=domain)
        out = root / "experts" / domain / stage
        heldout = heldout_rl_prompts(world, domain, root / "rl_heldout" / f"{domain}.jsonl") if stage == "rl" else None
        cfg = _stage_config(recipe, stage, domain, model, data, out, seed, progress,
                            world / "data" / "general_sft.jsonl", heldout, threads)
        steps.run(f"experts/{domain}/{stage}", out, {"cfg": cfg, "parent": str(model)}, lambda c=cfg: train(c))
        outputs[stage] = model = out
    return outputs


def worker_plan(workers: int | None, jobs: int, cores: int) -> tuple[int, int | None]:
    """(processes, torch threads each) for running `jobs` independent jobs on `cores` cores.

    Side by side beats one after another on small models: a 2-expert step of the default toy model takes
    0.64 s with 2 threads, and two 1-thread processes each take 1.06-1.13 s (14% more steps per second;
    quick's smaller model: 34%).

    >>> worker_plan(None, 4, 2), worker_plan(None, 4, 16), worker_plan(1, 4, 2), worker_plan(None, 1, 2)
    ((2, 1), (4, 4), (1, None), (1, None))
    """
    count = max(1, min(workers or cores, jobs, cores))
    return (1, None) if count == 1 else (count, max(1, cores // count))


def _job(job: dict) -> dict:
    """One job in a worker process: its steps are recorded as the parent's would be, then handed back."""
    import torch

    torch.set_num_threads(job["threads"])
    tag = job["tag"]
    steps = Steps(Path(job["root"]), lambda text: print(text.replace("[demo] ", f"[demo:{tag}] "), flush=True))
    steps.produced = dict(job["produced"])
    result = job["fn"](steps, *job["args"], **({"threads": job["threads"]} if job["pass_threads"] else {}))
    return {"result": result, "timings": steps.timings, "produced": steps.produced}


class Workers:
    """Spawned worker processes kept for the whole demo, so each pays the torch/transformers import once
    (spawned, not forked: no thread pool is forked). `run` runs jobs side by side in them."""

    def __init__(self, workers: int | None):
        self.workers = workers
        self.size = worker_plan(workers, available_cores(), available_cores())[0]
        self._pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, steps: Steps, jobs: dict[str, tuple], pass_threads: bool = False) -> dict:
        """Run `jobs` ({tag: (fn, args)}, `fn(steps, *args)` a module-level function), started in the given
        order; with one process or one job: here, one after another. Returns {tag: result}; the workers' step
        timings and digests merge back, so a later serial rerun redoes nothing."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        count, threads = worker_plan(self.workers, len(jobs), available_cores())
        if count == 1:
            return {tag: fn(steps, *args) for tag, (fn, args) in jobs.items()}
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"))
        steps.log(f"[demo] {len(jobs)} jobs side by side in {count} processes x {threads} threads: "
                  f"{', '.join(jobs)}")
        futures = {tag: self._pool.submit(_job, {"fn": fn, "args": args, "tag": tag, "root": str(steps.root),
                                                 "threads": threads, "produced": steps.produced,
                                                 "pass_threads": pass_threads})
                   for tag, (fn, args) in jobs.items()}
        done = {tag: future.result() for tag, future in futures.items()}
        for out in done.values():
            steps.timings.update(out["timings"])
            steps.produced.update(out["produced"])
        return {tag: out["result"] for tag, out in done.items()}


def _relative_cost(recipe: Recipe, domain: str) -> float:
    """A domain's rough training cost, to start the longest first (an RL step samples 64+ completions)."""
    return sum(stage_budget(recipe, domain, s).steps * (10 if s == "rl" else 1) for s in recipe.domain_stages[domain])


def _worker_plan_here(cfg: DemoConfig) -> tuple[int, int]:
    workers, threads = worker_plan(cfg.workers, len(cfg.domains), available_cores())
    return workers, threads or available_cores()


def train_experts(steps: Steps, cfg: DemoConfig, root: Path, world: Path, bar_base: Path, recipe: Recipe,
                  workers: Workers | None = None) -> dict[str, dict[str, Path]]:
    """Every domain's expert, side by side (longest first); the same checkpoints as one after another with
    the workers' thread count."""
    progress = cfg.progress and _worker_plan_here(cfg)[0] == 1
    order = sorted(cfg.domains, key=lambda d: -_relative_cost(recipe, d))
    jobs = {d: (train_expert, (root, world, bar_base, d, recipe, cfg.seed, progress)) for d in order}
    with contextlib.nullcontext(workers) if workers else Workers(cfg.workers) as pool:
        done = pool.run(steps, jobs, pass_threads=True)
    return {d: done[d] for d in cfg.domains}


def evaluate_model(steps: Steps, name: str, model: Path, world: Path, out: Path, recipe: Recipe,
                   categories: list[str] | None = None) -> dict:
    from barkit.eval.harness import EvalConfig, evaluate, load_results

    cfg = EvalConfig(model=str(model), suite="toy", world=str(world), out=str(out), name=name,
                     categories=categories, max_new_tokens=recipe.eval_max_new_tokens, batch_size=64,
                     limit=recipe.eval_limit)
    steps.run(f"eval/{out.name}", out / "results.json", {"cfg": cfg}, lambda: evaluate(cfg, show_progress=False))
    return load_results(str(out))


def run_baseline_rows(cfg: DemoConfig, steps: Steps, root: Path, world: Path, bar_base: Path,
                      finals: dict[str, Path], moe: Path, recipe: Recipe, results: dict) -> tuple[dict, dict]:
    """Train and evaluate the baselines; add their rows to `results`; return (costs per row, add-a-domain)."""
    from barkit.baselines import (LABELS, add_costs, add_domain_scenario, bar_cost, chain_cost,
                                  plot_score_vs_cost, run_baselines, run_cost)

    costs: dict = {}
    evals = root / "eval"
    for key, (path, cost) in run_baselines(steps, root, world, bar_base, finals, recipe, cfg.seed,
                                           cfg.progress).items():
        results[LABELS[key]] = evaluate_model(steps, LABELS[key], path, world, evals / f"baseline-{key}", recipe)
        costs[LABELS[key]] = cost
    expert_costs = {d: chain_cost(p, bar_base) for d, p in finals.items()}
    costs.update({MODEL_LABELS.get(d, f"2x-{d}"): c for d, c in expert_costs.items()})
    costs[MODEL_LABELS["composed"]] = add_costs(*expert_costs.values())
    costs[MODEL_LABELS["moe"]] = bar_cost(moe, finals, bar_base)
    plot_score_vs_cost(results, costs, root / "score_vs_cost.png",
                       title=f"Score vs training cost on the toy world ({cfg.profile} profile)")
    return costs, add_domain_scenario(expert_costs, run_cost(moe), costs[LABELS["retrain"]], recipe)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the demo; returns its summary (also written to OUT/summary.json)."""
    with Workers(cfg.workers) as workers:
        return _run_demo(cfg, log, workers)


def _run_demo(cfg: DemoConfig, log: Callable[[str], None], workers: Workers) -> dict:
    from barkit.branch import BranchConfig, branch
    from barkit.compose import ComposeConfig, compose
    from barkit.eval.report import markdown_table, plot_categories, plot_routing
    from barkit.route import RouteConfig, train_router
    from barkit.world.build import WorldConfig, build_world

    root = Path(cfg.out)
    recipe = get_recipe(cfg.profile)
    overrides = {k: getattr(cfg, k) for k in ("shared_lr_scale", "route_supervision", "compose_shared")
                 if getattr(cfg, k) is not None}
    recipe = dataclasses.replace(recipe, **overrides)
    steps = Steps(root, log)
    start = time.perf_counter()
    world_cfg = WorldConfig(out=str(root / "world"), profile=cfg.profile, seed=cfg.seed, progress=cfg.progress)
    world = steps.run("world", root / "world" / "anchor", {"cfg": world_cfg},
                      lambda: build_world(world_cfg, log=log)).parent

    bar_base = root / "bar-2x-base"
    branch_cfg = BranchConfig(anchor=str(world / "anchor"), base=str(world / "base"), out=str(bar_base),
                              seed=cfg.seed, overwrite=True)
    steps.run("branch", bar_base, {"cfg": branch_cfg}, lambda: branch(branch_cfg))

    experts_start = time.perf_counter()
    experts = train_experts(steps, cfg, root, world, bar_base, recipe, workers)
    experts_wall = time.perf_counter() - experts_start
    finals = {d: stages[recipe.domain_stages[d][-1]] for d, stages in experts.items()}

    composed = root / "bar-moe-composed"
    compose_cfg = ComposeConfig(anchor=str(bar_base), experts=[f"{d}={p}" for d, p in finals.items()],
                                out=str(composed), shared=recipe.compose_shared, overwrite=True)
    steps.run("compose", composed, {"cfg": compose_cfg}, lambda: compose(compose_cfg))

    moe = root / "bar-moe"
    router_data = [str(world / "data" / "general_sft.jsonl")] + [str(world / "data" / f"{d}_sft.jsonl")
                                                                 for d in cfg.domains]
    b = recipe.router
    route_cfg = RouteConfig(model=str(composed), data=router_data, out=str(moe),
                            sample_fraction=recipe.router_fraction, steps=b.steps, lr=b.lr, batch_size=b.batch_size,
                            seq_len=recipe.seq_len, seed=cfg.seed, progress=cfg.progress, overwrite=True)
    steps.run("route", moe, {"cfg": route_cfg}, lambda: train_router(route_cfg))

    evals = root / "eval"
    table_jobs = {MODEL_LABELS["moe"]: (moe, evals / "bar-moe"),  # the MoEs are the slowest: first
                  MODEL_LABELS["composed"]: (composed, evals / "bar-moe-composed"),
                  **{MODEL_LABELS.get(d, f"2x-{d}"): (finals[d], evals / f"2x-{d}") for d in experts},
                  MODEL_LABELS["anchor"]: (world / "anchor", evals / "anchor")}
    jobs = {label: (evaluate_model, (label, path, world, out, recipe)) for label, (path, out) in table_jobs.items()}
    if cfg.eval_stages:  # each intermediate stage: its own category + the general ones it must keep
        for d, stages in experts.items():
            for stage, path in list(stages.items())[:-1]:
                label = f"{MODEL_LABELS.get(d, f'2x-{d}')} after {stage}"
                jobs[label] = (evaluate_model, (label, path, world, evals / f"2x-{d}-{stage}", recipe,
                                                [DOMAIN_CATEGORY[d], "knowledge", "reasoning", "chat"]))
    evals_start = time.perf_counter()
    done = workers.run(steps, jobs)
    evals_wall = time.perf_counter() - evals_start
    order = [MODEL_LABELS["anchor"], *(MODEL_LABELS.get(d, f"2x-{d}") for d in experts), MODEL_LABELS["composed"],
             MODEL_LABELS["moe"]]
    results = {label: done[label] for label in order}

    costs, add_domain = (run_baseline_rows(cfg, steps, root, world, bar_base, finals, moe, recipe, results)
                         if cfg.baselines else ({}, None))
    from barkit.baselines import cost_columns

    table = markdown_table(results, cost_columns(costs) if costs else None)
    (root / "table.md").write_text(table)
    plot_categories(results, root / "table.png", title=f"BAR on the toy world ({cfg.profile} profile)")
    routing = results[MODEL_LABELS["moe"]].get("routing")
    if routing:
        plot_routing(routing["shares"], routing["experts"], root / "routing.png",
                     title="BAR-5x: routing share per evaluation category")
    summary = {"profile": cfg.profile, "seed": cfg.seed, "table": table, "wall_s": time.perf_counter() - start,
               "step_seconds": steps.timings, "experts_wall_s": experts_wall, "evals_wall_s": evals_wall,
               "expert_workers": dict(zip(("processes", "threads"), _worker_plan_here(cfg))),
               "scores": {k: {"overall": v["overall"], **v["categories"]} for k, v in results.items()},
               **({"costs": costs, "add_domain": add_domain} if costs else {})}
    write_json(root / "summary.json", summary)
    log("\n" + table)
    log(f"wrote {root / 'table.md'}, {root / 'table.png'}, {root / 'routing.png'}")
    return summary
