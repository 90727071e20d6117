"""Run each step of an experiment once, and run independent steps side by side.

`Steps` records a plan digest per step (`.demo/STEP.json`, the hash of what the step was asked to do); a
re-run skips each step whose output exists and whose plan is unchanged, so a crashed run resumes, and a
copy of a run directory rerun with one knob changed redoes only the steps that knob reaches. `Workers`
keeps a pool of spawned processes for the independent steps (the domain experts, the evaluations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import torch

from barkit.checkpoint import write_json
from barkit.train.stages import available_cores


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
    --progress false must not redo the steps) and without fields left at their defaults; a config section
    (a nested dataclass) that says nothing else is left out too."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plan = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name in COSMETIC_KEYS or _is_default(f, item):
                continue
            if dataclasses.is_dataclass(item) and not _plain(item):
                continue
            plan[f.name] = _plain(item)
        return plan
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
    ctx, tag = job["ctx"], job["tag"]
    torch.set_num_threads(ctx.threads)
    steps = Steps(ctx.root, lambda text: print(text.replace("[demo] ", f"[demo:{tag}] "), flush=True))
    steps.produced = dict(job["produced"])
    result = job["fn"](dataclasses.replace(ctx, steps=steps), *job["args"])
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

    def run(self, ctx, jobs: dict[str, tuple]) -> dict:
        """Run `jobs` ({tag: (fn, args)}, `fn(ctx, *args)` a module-level function and `ctx` a
        `barkit.toy.run.RunContext`), started in the given
        order; with one process or one job: here, one after another. Each worker's context has its thread
        count and progress bars off. Returns {tag: result}; the workers' step timings and digests merge back,
        so a later serial rerun redoes nothing."""
        steps = ctx.steps
        count, threads = worker_plan(self.workers, len(jobs), available_cores())
        if count == 1:
            return {tag: fn(ctx, *args) for tag, (fn, args) in jobs.items()}
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"))
        steps.log(f"[demo] {len(jobs)} jobs side by side in {count} processes x {threads} threads: "
                  f"{', '.join(jobs)}")
        shipped = dataclasses.replace(ctx, steps=None, threads=threads, progress=False)
        futures = {tag: self._pool.submit(_job, {"fn": fn, "args": args, "tag": tag, "ctx": shipped,
                                                 "produced": steps.produced})
                   for tag, (fn, args) in jobs.items()}
        done = {tag: future.result() for tag, future in futures.items()}
        for out in done.values():
            steps.timings.update(out["timings"])
            steps.produced.update(out["produced"])
        return {tag: out["result"] for tag, out in done.items()}
