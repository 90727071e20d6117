"""`train(cfg)`: one training stage from an input checkpoint directory to an output checkpoint directory.

Every user error (bad model, bad data, bad globs) is raised before anything is written; the output
appears atomically, after it was loaded back and its frozen bytes re-checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from barkit.checkpoint import sha256_file
from barkit.config import to_dict
from barkit.errors import BarkitError
from barkit.outputs import output_lock, refuse_inside
from barkit.train import checkpointing, sharded_load, trainable
from barkit.train.fsdp import (
    DTYPES,
    FSDPRuntime,
    checkpoint_layers,
    full_state_dict,
    is_sharded,
    leave_process_group_at_exit,
    shard_model,
)
from barkit.train.loop import Loop, StepCallback
from barkit.train.metrics import MetricsLog, plot_curves, read_metrics
from barkit.train.model_io import ModelInfo, inspect_model, load_model, load_tokenizer, write_output
from barkit.train.objectives import TrainContext, get_objective
from barkit.train.optim import build_optimizer
from barkit.train.rows import data_digest
from barkit.train.shards import META, is_shards
from barkit.train.stages import StageConfig, available_cores

log = logging.getLogger("barkit.train")

# Settings that change how a run is executed or reported but not what it computes.
_NOT_IDENTITY = ("checkpoint", "progress", "overwrite", "log_every", "verify", "max_shard_size", "out",
                 "distributed.threads")


def make_runtime(cfg: StageConfig):
    """The process group: accelerate's Accelerator (one process, DDP) or barkit's FSDP2 runtime."""
    _refuse_foreign_sharding(cfg)
    if cfg.distributed.strategy == "fsdp":
        runtime = FSDPRuntime()
    else:
        runtime = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.distributed.mixed_precision)
    leave_process_group_at_exit()
    torch.set_num_threads(cfg.distributed.threads or max(1, available_cores() // runtime.num_processes))
    if cfg.distributed.deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspace
    torch.use_deterministic_algorithms(cfg.distributed.deterministic, warn_only=True)
    return runtime


def _refuse_foreign_sharding(cfg: StageConfig) -> None:
    """A launch configured for accelerate's FSDP or DeepSpeed would not shard the way barkit needs (and on a
    CPU host accelerate silently runs DDP instead): refuse it rather than train something else."""
    asked = [name for name, var in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if os.environ.get(var, "").lower() == "true"]
    if asked:
        raise BarkitError(f"this launch asks accelerate for {asked[0]}, which barkit does not use: launch with "
                          "torchrun (or accelerate launch with configs/accelerate/ddp.yaml) and set "
                          "distributed.strategy: fsdp for barkit's own FSDP2 sharding")


def _say(acc, text: str) -> None:
    if acc.is_main_process and text:
        log.info(text)
        if not logging.getLogger().handlers:
            print(text, flush=True)


def data_files(cfg: StageConfig) -> dict[str, str]:
    """sha256 of every data file (of a token-shard directory: its meta.json, which holds the hashes of its
    sources and tokenizer; hashing hundreds of GB of tokens per run would cost minutes)."""
    paths = [*cfg.data, *cfg.mixture.general_data, *([cfg.rl.eval_data] if cfg.rl.eval_data else [])]
    return {str(Path(p).resolve()): sha256_file(Path(p) / META) if is_shards(p) else data_digest(p) for p in paths}


def identity(cfg: StageConfig, info: ModelInfo, files: dict[str, str]) -> dict:
    """What must match for a checkpoint to be resumed: semantic config, parent weights and data hashes."""
    flat = {}
    for key, value in to_dict(cfg).items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        flat.update({key if sub is None else f"{key}.{sub}": v for sub, v in items})
    flat = {k: v for k, v in flat.items() if k not in _NOT_IDENTITY and k.split(".")[0] not in _NOT_IDENTITY}
    return {**flat, "parent weights": info.reader.fingerprint(), **{f"data {p}": h for p, h in files.items()}}


def _weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _rank_digests(acc, model: torch.nn.Module) -> list[str]:
    """Every rank's weight digest: data parallelism must leave all replicas identical."""
    digest = _weights_digest(model)
    if acc.num_processes == 1:
        return [digest]
    return list(gather_object([digest]))


def _steps(cfg: StageConfig, items: list, per_step: int) -> int:
    """`steps` if given, else enough steps for `epochs` passes over the items (`per_step` items a step)."""
    if cfg.steps is not None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * len(items) / per_step))


def _open_work_dir(acc, cfg: StageConfig, root: Path, ident: dict) -> Path | None:
    """Check on every rank, then (re)create on the main one; return the checkpoint to resume from."""
    keep = checkpointing.check(root, ident, cfg.checkpoint.resume, cfg.overwrite)
    acc.wait_for_everyone()
    if acc.is_main_process:
        checkpointing.reset(root, ident, keep)
    acc.wait_for_everyone()
    return checkpointing.latest(root) if keep else None


def _model_and_plan(cfg: StageConfig, info: ModelInfo, acc) -> tuple[torch.nn.Module, trainable.TrainablePlan]:
    """The model in its checkpoint dtype (fp32 throughout without mixed precision), the trainable set applied and
    the anchor's rows split off: trainable tensors in fp32 (the optimizer's master copy), frozen ones as stored."""
    mixed = cfg.distributed.mixed_precision != "no"
    raw = load_model(info, acc.device, info.dtype if mixed else torch.float32)
    plan = trainable.build_plan(raw, cfg.trainable, info.spec, info.num_experts, cfg.stage,
                                cfg.allow_anchor_updates)
    trainable.apply(plan, raw)
    _say(acc, trainable.table(plan, raw))
    return raw, plan


def _load_by_layer(cfg: StageConfig, info: ModelInfo, acc):
    """The model read one layer at a time (`sharded_load`; under FSDP each rank keeps its shard); None (with a
    line saying so) when the checkpoint's layout needs transformers' own loader, which reads the whole model
    into host memory (on every rank)."""
    mixed = cfg.distributed.mixed_precision != "no"
    compute = DTYPES[cfg.distributed.mixed_precision] if mixed else None
    loaded = sharded_load.load_layers(info.reader, info.spec, info.num_experts, cfg, torch.device(acc.device),
                                      info.dtype if mixed else torch.float32,
                                      shard=cfg.distributed.strategy == "fsdp", compute_dtype=compute)
    if loaded is None:
        _say(acc, f"{info.reader.path}: a weight layout barkit's tables do not rebuild; loading the whole model "
                  "with transformers")
        return None
    _say(acc, loaded[3])
    return loaded[:3]


def _prepare(cfg: StageConfig, info: ModelInfo, acc, raw) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """DDP: accelerate wraps the model; FSDP: barkit shards it in place, then builds the optimizer over the
    shards (so each rank holds the AdamW state of its own slice only)."""
    if cfg.distributed.strategy != "fsdp":
        if cfg.distributed.activation_checkpointing:  # one process or DDP: the same recomputation as under FSDP
            checkpoint_layers(raw)
        if cfg.distributed.mixed_precision != "no":
            trainable.compute_in(raw, DTYPES[cfg.distributed.mixed_precision])
        return acc.prepare(raw, build_optimizer(raw, cfg, info.spec))
    if is_sharded(raw):  # loaded shard by shard
        return raw, build_optimizer(raw, cfg, info.spec)
    compute = None if cfg.distributed.mixed_precision == "no" else DTYPES[cfg.distributed.mixed_precision]
    model = shard_model(raw, info.spec, compute, cfg.distributed.activation_checkpointing)
    return model, build_optimizer(model, cfg, info.spec)


def _gathered(cfg: StageConfig, info: ModelInfo, acc, raw, plan) -> torch.nn.Module | None:
    """The trained model whole, with the stock parameter names: the replica itself, or (FSDP) the shards
    gathered on the main process into a fresh copy of the input model (None on the other ranks)."""
    if not is_sharded(raw):
        trainable.fuse_rows(raw)
        return raw
    state = full_state_dict(raw)  # collective
    if not acc.is_main_process:
        return None
    whole = load_model(info, "cpu", torch.float32)
    trainable.split_rows(plan, whole, master_dtype=torch.float32)
    whole.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    trainable.fuse_rows(whole)
    return whole


def _finish(cfg: StageConfig, info: ModelInfo, acc, raw, plan, before: str, root: Path, extra: dict) -> None:
    """Re-check the frozen bytes and the replicas, then write the output (main process)."""
    sharded = is_sharded(raw)
    raw = _gathered(cfg, info, acc, raw, plan)
    if raw is not None and trainable.frozen_fingerprint(plan, raw) != before:
        raise BarkitError("internal error: frozen parameters changed during training")
    digests = ["sharded: one copy"] if sharded else _rank_digests(acc, raw)
    if len(set(digests)) != 1:
        raise BarkitError(f"internal error: data-parallel replicas diverged ({digests})")
    if not acc.is_main_process:
        return
    out = Path(cfg.out)
    plot_curves(read_metrics(root / "metrics.jsonl"), root / "curves.png",
                f"{cfg.stage}: {Path(cfg.model).name} -> {out.name}")
    count, total = trainable.count(plan, raw)

    def check_frozen(reloaded):
        if trainable.frozen_fingerprint(plan, reloaded) != before:
            raise BarkitError(f"{out}: frozen parameters differ after saving and reloading")

    extra = {"trainable": {"declared": plan.declared, "full": plan.full, "partial": plan.partial,
                           "params": count, "total_params": total},
             "data_parallel": {"world_size": acc.num_processes, "strategy": cfg.distributed.strategy,
                               "rank_weight_sha256": digests}, **extra}
    write_output(cfg, info, raw, root, extra, check_frozen)
    shutil.rmtree(root, ignore_errors=True)


def train(cfg: StageConfig, on_step: StepCallback | None = None, rollout=None) -> Path:
    """Run one stage; returns the output checkpoint directory. `on_step(step, metrics)` runs after each step;
    `rollout` replaces the sampler of objectives that generate (see barkit.train.objectives.grpo)."""
    explicit = cfg.trainable is not None
    cfg = cfg.resolve()
    cfg.validate()
    objective_cls = get_objective(cfg.objective)
    settings = objective_cls.settings_from(cfg)
    acc = make_runtime(cfg)
    with output_lock(cfg.out) if acc.is_main_process else contextlib.nullcontext():  # the job owns OUT and OUT.ckpt
        return _train(cfg, explicit, objective_cls, settings, acc, on_step, rollout)


def _train(cfg: StageConfig, explicit: bool, objective_cls, settings, acc, on_step, rollout) -> Path:
    refuse_inside(cfg.out, cfg.model)
    if Path(cfg.out).exists() and not cfg.overwrite:
        raise BarkitError(f"{cfg.out}: output already exists (pass --overwrite true to replace it)")
    info = inspect_model(cfg, explicit)
    if cfg.route_supervision > 0 and info.spec is None:
        raise BarkitError(f"{cfg.model}: config key 'route_supervision' needs a mixture-of-experts model")
    tokenizer = load_tokenizer(info.reader.path)
    items, held_out = objective_cls.load(cfg, tokenizer, settings)
    files = data_files(cfg)
    loaded = _load_by_layer(cfg, info, acc)
    if loaded is not None:
        raw, plan, before = loaded
    else:
        raw, plan = _model_and_plan(cfg, info, acc)
        before = trainable.frozen_fingerprint(plan, raw)
        trainable.split_rows(plan, raw, master_dtype=torch.float32)
    steps = _steps(cfg, items, objective_cls.items_per_step(cfg))
    root = checkpointing.work_dir(cfg.out)
    ckpt = _open_work_dir(acc, cfg, root, identity(cfg, info, files))

    torch.manual_seed(cfg.seed + acc.process_index)
    model, optimizer = _prepare(cfg, info, acc, raw)
    objective = objective_cls(TrainContext(cfg, model, raw, tokenizer, acc, steps, rollout, plan, info.spec), items,
                              held_out, settings)
    state = checkpointing.load(ckpt, raw, optimizer, acc) if ckpt is not None else {"step": 0}
    if ckpt is not None:
        _say(acc, f"resuming from {ckpt} (step {state['step']} of {steps})")
    metrics = MetricsLog(root / "metrics.jsonl", resume_step=state["step"]) if acc.is_main_process else None
    if state["step"] == 0:
        scores = objective.evaluate(0)  # collective: every rank takes part
        if scores and metrics is not None:
            metrics.log({"step": 0, **scores})
    loop = Loop(cfg, model, raw, optimizer, acc, steps, root, metrics, on_step)
    try:
        last = loop.run(objective, state["step"])
    finally:
        getattr(objective, "close", lambda: None)()
    if metrics is not None:
        metrics.close()
    _finish(cfg, info, acc, raw, plan, before, root, {"data": files, "steps": steps, "final_metrics": last})
    acc.wait_for_everyone()
    return Path(cfg.out)
