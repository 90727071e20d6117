"""Dense weight-space merging (the Merge-to-Learn baselines) and folding a BAR expert back into a dense model.

Every method is a setting of one task-arithmetic core, `merge_tensors`:
    theta = theta_general + sum_i lambda_i * sparsify(theta_i - theta_ref)
- task arithmetic: theta_ref = the pretrained model;
- linear interpolation / WiSE-FT: theta_ref = theta_general, which gives (1 - sum lambda) theta_general +
  sum lambda_i theta_i (WiSE-FT: the general model is the zero-shot start, one fine-tuned model);
- TIES: sparsify = keep the top `density` fraction by magnitude, then elect a sign per entry (sign of the
  sum, i.e. the larger total magnitude) and average only the task vectors that agree (disjoint mean);
- DARE: sparsify = drop each entry with probability p and rescale the rest by 1/(1-p), seeded per tensor from
  (seed, key, model index); DARE-TIES adds TIES's sign election.
Merging streams one key at a time: linear methods keep one task vector alive at a time; sign election needs
all N task vectors of one tensor at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from barkit import verify
from barkit.arch import ROLES, ArchSpec, is_dense, spec_for_dense
from barkit.checkpoint import (
    DEFAULT_SHARD_SIZE,
    CheckpointReader,
    ShardedWriter,
    TensorBytes,
    parent_dirs,
    read_manifest,
    write_metadata,
)
from barkit.errors import BarkitError
from barkit.mixing import MergeSettings, merge_of
from barkit.moe import MoECheckpoint, VerifyMode, open_moe, parse_named, verify_loads
from barkit.outputs import atomic_output_dir
from barkit.select import mask_experts

Method = Literal["task_arithmetic", "linear", "wise_ft", "ties", "dare", "dare_ties"]
NEEDS_PRETRAINED = ("task_arithmetic", "ties", "dare", "dare_ties")
STEPS_KEY = "train_steps"  # manifest key: optimizer steps that produced the checkpoint


def dense_config_from_moe(spec: ArchSpec, moe_config: dict) -> dict:
    """Inverse of `ArchSpec.moe_config`: keep the keys the dense family's config knows, restore its type."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    dense_type = spec.dense_model_types[0]
    if "mistral" in spec.dense_model_types and moe_config.get("sliding_window") is not None:
        dense_type = "mistral"
    defaults = CONFIG_MAPPING[dense_type]().to_dict()
    known = set(defaults) - {"_name_or_path", "transformers_version"}
    cfg = {k: v for k, v in moe_config.items() if k in known}
    # keys the forward translation dropped held their supported (default) values, or branch refused the model
    cfg.update({k: defaults[k] for k in spec.config_drop if k in defaults and k not in cfg})
    cfg.update(model_type=dense_type, architectures=[MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[dense_type]])
    return cfg


class DenseView:
    """One expert of an MoE checkpoint seen as the family's dense checkpoint (its FFN = that expert)."""

    def __init__(self, moe: MoECheckpoint, expert: int) -> None:
        if not 0 <= expert < moe.num_experts:
            raise BarkitError(f"{moe.path}: expert index {expert} out of range (0..{moe.num_experts - 1})")
        self.moe, self.expert, self.path, self.reader = moe, expert, moe.path, moe.reader
        self.config = dense_config_from_moe(moe.spec, moe.reader.config)
        self.spec = moe.spec
        self._map = {key: key for key in moe.shared_keys()}
        self._map.update({moe.spec.dense_key(r, layer): moe.expert_key(r, layer, expert)
                          for r in ROLES for layer in range(moe.num_layers)})

    def keys(self) -> list[str]:
        return sorted(self._map)

    def get(self, key: str) -> torch.Tensor:
        return self.moe.reader.get(self._map[key])

    def locate(self, key: str) -> TensorBytes:
        return self.moe.reader.locate(self._map[key])

    def read_into(self, key: str, start: int, out: memoryview) -> None:
        self.moe.reader.read_into(self._map[key], start, out)

    def shape(self, key: str) -> list[int]:
        return self.moe.reader.shape(self._map[key])

    def manifest(self) -> dict | None:
        return self.moe.reader.manifest()


Dense = CheckpointReader | DenseView


def open_dense(path: str | Path, label: str) -> Dense:
    """A dense checkpoint, or a 2-expert BAR checkpoint seen through its expert 1 (its dense version)."""
    reader = CheckpointReader(path)
    if is_dense(reader.config):
        spec_for_dense(reader.config.get("model_type"), str(reader.path / "config.json"))
        return reader
    moe = open_moe(path)
    if moe.num_experts != 2:
        raise BarkitError(f"{reader.path}: {label} is a {moe.num_experts}-expert MoE; fold the expert to "
                          "merge with merge.fold_expert first")
    return DenseView(moe, 1)


def _dense_spec(view: Dense) -> ArchSpec:
    return view.spec if isinstance(view, DenseView) else spec_for_dense(view.config.get("model_type"))


def write_dense(view: Dense, writer: ShardedWriter) -> None:
    for key in view.keys():
        writer.add(key, view.get(key))


@torch.no_grad()
def _verify_fold(out: Path, mode: str, view: DenseView) -> None:
    """The folded dense model must equal the MoE routed only to that expert."""
    model = verify_loads(out, mode, set(view.keys()), view.config, view.spec)
    if model is None:
        return
    moe = verify.load_strict(view.path)
    others = [i for i in range(view.moe.num_experts) if i != view.expert]
    with mask_experts(moe, others):
        diff = verify.max_logit_diff(model, moe, view.config["vocab_size"])
    tol = 1e-4 if view.get(view.keys()[0]).dtype == torch.float32 else 5e-2
    if diff > tol:
        raise BarkitError(f"{out}: logits check failed: folded model differs from the routed MoE by {diff:.3g}")


@dataclass
class FoldConfig:
    moe: str = field(metadata={"help": "an MoE checkpoint (a trained 2-expert BAR model, or a composed one)"})
    out: str = field(metadata={"help": "output directory (a dense checkpoint)"})
    expert: str = field(default="1", metadata={"help": "expert to fold: index or name"})
    max_shard_size: str = DEFAULT_SHARD_SIZE
    verify: VerifyMode = "auto"
    overwrite: bool = False


def fold_expert(moe_dir: str | Path, out: str | Path, expert: int | str = 1, *,
                max_shard_size: str = DEFAULT_SHARD_SIZE, verify_mode: VerifyMode = "auto",
                overwrite: bool = False) -> Path:
    """Write the dense version of one expert: its FFN plus the MoE's shared tensors, dense config."""
    moe = open_moe(moe_dir)
    if isinstance(expert, str) and expert.isdigit():
        expert = int(expert)
    index = moe.index(expert) if isinstance(expert, str) else expert
    view = DenseView(moe, index)
    with atomic_output_dir(out, overwrite=overwrite, inputs=(moe.path,)) as tmp:
        with ShardedWriter(tmp, max_shard_size) as writer:
            write_dense(view, writer)
        settings = FoldConfig(moe=str(moe_dir), out=str(out), expert=str(expert), max_shard_size=max_shard_size,
                              verify=verify_mode, overwrite=overwrite)
        write_metadata(tmp, "fold", settings, {"moe": moe.reader}, writer.file_hashes, tokenizer_src=moe.path,
                       config=view.config, extra={"expert": moe.names[index], "arch": moe.spec.name})
        _verify_fold(tmp, verify_mode, view)
    return Path(out)


@dataclass
class MergeConfig:
    method: Method = field(metadata={"help": "merging method"})
    general: str = field(metadata={"help": "the general model (task arithmetic's base; WiSE-FT's zero-shot start)"})
    models: list[str] = field(metadata={"help": "NAME=CKPT[:lambda] (comma-separated); a 2-expert BAR "
                                                "checkpoint is merged through its expert 1"})
    out: str = field(metadata={"help": "output directory"})
    pretrained: str | None = field(default=None, metadata={"help": "pretrained model the task vectors are "
                                                                   "relative to (task_arithmetic, ties, dare)"})
    lambda_heuristic: Literal["equal", "steps"] = field(default="equal", metadata={
        "help": "lambda for models without ':lambda': equal (1 for task vectors, 1/(N+1) linear, 0.5 WiSE-FT) "
                "or steps (each model's share of training steps, from manifests' train_steps)"})
    density: float = field(default=0.2, metadata={"help": "TIES: fraction of each task vector kept"})
    densities: list[str] = field(default_factory=list, metadata={
        "help": "TIES: NAME=DENSITY per model (comma-separated), as mergekit's per-model density; models not "
                "named keep --density"})
    drop_p: float = field(default=0.5, metadata={"help": "DARE: drop probability"})
    # Where the papers and mergekit differ; the defaults follow the papers (docs/design.md, "Merging").
    trim_rounding: Literal["round", "floor"] = field(default="round", metadata={
        "help": "TIES trim: keep round(density * n) entries, ties at the threshold kept (nearest the requested "
                "density), or exactly max(1, int(density * n)) (floor: mergekit 0.1.5)"})
    dare_rescale: Literal["inverse", "l1"] = field(default="inverse", metadata={
        "help": "DARE: rescale kept entries by 1/(1-p), which keeps every entry's expected value (the DARE paper), "
                "or so each task vector keeps its L1 norm (l1: mergekit's default)"})
    ties_divisor: Literal["count", "weight_sum", "none"] = field(default="count", metadata={
        "help": "TIES sign election: divide the agreeing task vectors' sum by how many agree (the TIES paper's "
                "disjoint mean), by the sum of their weights (weight_sum: mergekit's ties, normalize: true) or "
                "not at all (none: mergekit's dare_ties, normalize: false)"})
    compute_dtype: Literal["wide", "input"] = field(default="wide", metadata={
        "help": "wide: fp32 arithmetic for bf16/fp16 inputs (fp64 for fp32), rounded once at the end (default); "
                "input: every op in the inputs' dtype, in mergekit's order (what its dtype: bfloat16 merges do)"})
    seed: int = 0
    max_shard_size: str = DEFAULT_SHARD_SIZE
    verify: VerifyMode = "auto"
    overwrite: bool = False

    def validate(self) -> None:
        models = parse_models(self.models)
        if not models:
            raise BarkitError("config key 'models': give at least one NAME=CKPT[:lambda]")
        if self.method in NEEDS_PRETRAINED and not self.pretrained:
            raise BarkitError(f"config key 'pretrained': required for method {self.method} (task vectors are "
                              "theta_i - theta_pretrained)")
        if self.method not in NEEDS_PRETRAINED and self.pretrained:
            raise BarkitError(f"config key 'pretrained': method {self.method} interpolates with the general "
                              "model and takes no pretrained model")
        if self.method == "wise_ft" and len(models) != 1:
            raise BarkitError(f"config key 'models': wise_ft takes exactly one fine-tuned model, got {len(models)}")
        if not 0 < self.density <= 1:
            raise BarkitError(f"config key 'density': must be in (0, 1], got {self.density}")
        per_model = parse_densities(self.densities, [name for name, _, _ in models])
        if per_model and self.method not in ("ties",):
            raise BarkitError(f"config key 'densities': only TIES trims by density (method is {self.method})")
        if not 0 <= self.drop_p < 1:
            raise BarkitError(f"config key 'drop_p': must be in [0, 1), got {self.drop_p}")


def parse_models(items: list[str]) -> list[tuple[str, str, float | None]]:
    """`NAME=CKPT[:lambda]` -> (name, path, lambda or None)."""
    out = []
    for name, rest in parse_named(items, "models"):
        path, sep, tail = rest.rpartition(":")
        if not sep or Path(rest).exists():  # a directory whose name has a colon is a path, not a weight
            out.append((name, rest, None))
            continue
        try:
            weight = float(tail)
        except ValueError:
            raise BarkitError(f"config key 'models': {name}={rest}: weight {tail!r} is not a number") from None
        if not math.isfinite(weight):
            raise BarkitError(f"config key 'models': {name}={rest}: weight {tail!r} is not finite")
        out.append((name, path, weight))
    return out


def parse_densities(items: list[str], names: list[str]) -> dict[str, float]:
    """`NAME=DENSITY` -> {name: density}, each name one of the merged models and each density in (0, 1]."""
    out = {}
    for name, value in parse_named(items, "densities"):
        if name not in names:
            raise BarkitError(f"config key 'densities': {name!r} is not one of the models ({', '.join(names)})")
        try:
            density = float(value)
        except ValueError:
            raise BarkitError(f"config key 'densities': {name}={value}: not a number") from None
        if not 0 < density <= 1:
            raise BarkitError(f"config key 'densities': {name}={value}: must be in (0, 1]")
        out[name] = density
    return out


def settings_for(cfg: MergeConfig) -> MergeSettings:
    conventions = {"trim_rounding": cfg.trim_rounding, "dare_rescale": cfg.dare_rescale,
                   "ties_divisor": cfg.ties_divisor, "seed": cfg.seed, "compute_dtype": cfg.compute_dtype}
    names = [name for name, _, _ in parse_models(cfg.models)]
    per_model = parse_densities(cfg.densities, names)
    densities = tuple(per_model.get(name, cfg.density) for name in names) if per_model else ()
    return {"ties": MergeSettings(density=cfg.density, densities=densities, elect_sign=True, **conventions),
            "dare": MergeSettings(drop_p=cfg.drop_p, **conventions),
            "dare_ties": MergeSettings(drop_p=cfg.drop_p, elect_sign=True, **conventions)}.get(
                cfg.method, MergeSettings(**conventions))


POST_TRAINING_STAGES = ("midtrain", "sft", "rl", "router")
PASS_THROUGH_STAGES = ("fold", "select", "compose")  # weight surgery: steps come from the parents


def trained_steps(manifest: dict | None, depth: int = 0) -> int | None:
    """Optimizer steps of post-training behind a checkpoint: its own stage's steps plus its parents', following
    the manifests' parent paths back to the pretrained model (pretraining and branching count 0), so a
    three-stage expert counts midtrain + sft + rl. None when no manifest says anything.

    >>> trained_steps({"stage": "sft", "steps": 40, "parents": {}})
    40
    """
    if not manifest or depth > 32:
        return None
    stage = manifest.get("stage")
    own = manifest.get("steps", manifest.get(STEPS_KEY))
    if stage not in POST_TRAINING_STAGES + PASS_THROUGH_STAGES:
        return 0 if stage else (int(own) if isinstance(own, (int, float)) and own >= 0 else None)
    total = int(own) if stage in POST_TRAINING_STAGES and isinstance(own, (int, float)) and own >= 0 else 0
    for parent in parent_dirs(manifest).values():
        total += trained_steps(read_manifest(parent), depth + 1) or 0
    return total


def _steps(view: Dense) -> int | None:
    return trained_steps(view.manifest())


def resolve_lambdas(cfg: MergeConfig, general: Dense, models: list[tuple[str, Dense, float | None]]) -> list[float]:
    """Explicit lambdas win; the rest come from the heuristic (steps falls back to equal without counts).

    steps: lambda_i = steps_i / (steps_general + sum_j steps_j), so for linear merging the general model's
    weight 1 - sum lambda is its own share; steps_general counts as 0 when its manifest has none.
    """
    n = len(models)
    equal = {"linear": 1 / (n + 1), "wise_ft": 0.5}.get(cfg.method, 1.0)
    steps = [_steps(view) for _, view, _ in models]
    if cfg.lambda_heuristic == "steps" and all(s is not None for s in steps) and sum(steps) > 0:
        total = sum(steps) + (_steps(general) or 0)
        guessed = [s / total for s in steps]
    else:
        guessed = [equal] * n
    return [given if given is not None else guess for (_, _, given), guess in zip(models, guessed)]


def check_mergeable(general: Dense, others: dict[str, Dense]) -> None:
    """Same dense family, same tensor names and shapes as the general model."""
    keys = general.keys()
    for label, view in others.items():
        if view.config.get("model_type") != general.config.get("model_type"):
            raise BarkitError(f"{view.path}: {label} is '{view.config.get('model_type')}', the general model "
                              f"'{general.config.get('model_type')}'")
        if view.keys() != keys:
            diff = sorted(set(view.keys()) ^ set(keys))
            raise BarkitError(f"{view.path}: {label} has different tensors from the general model (e.g. '{diff[0]}')")
        for key in keys:
            if view.shape(key) != general.shape(key):
                raise BarkitError(f"{view.path}: {label} tensor '{key}' has shape {view.shape(key)}, the general "
                                  f"model's is {general.shape(key)}")


def write_merge(general: Dense, reference: Dense, models: list[Dense], lambdas: list[float],
                settings: MergeSettings, writer: ShardedWriter) -> None:
    """Per key, streamed (`mixing.merge_of`): only the output tensor, the sparsity masks and, while they are
    planned, one task vector are held whole."""
    for key in general.keys():
        writer.add(key, merge_of(general, reference, models, key, lambdas, settings))


def merge(cfg: MergeConfig) -> Path:
    """Write the merged dense checkpoint; returns the output directory."""
    parsed = parse_models(cfg.models)
    general = open_dense(cfg.general, "general")
    pretrained = open_dense(cfg.pretrained, "pretrained") if cfg.pretrained else None
    models = [(name, open_dense(path, name), given) for name, path, given in parsed]
    check_mergeable(general, {**({"pretrained": pretrained} if pretrained else {}),
                              **{name: view for name, view, _ in models}})
    lambdas = resolve_lambdas(cfg, general, models)
    parents = {"general": _reader(general),
               **({"pretrained": _reader(pretrained)} if pretrained else {}),
               **{name: _reader(view) for name, view, _ in models}}
    for parent in parents.values():
        parent.hash_in_background()  # provenance hashes overlap the streaming below
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=tuple(r.path for r in parents.values())) as tmp:
        with ShardedWriter(tmp, cfg.max_shard_size) as writer:
            write_merge(general, pretrained or general, [view for _, view, _ in models], lambdas, settings_for(cfg),
                        writer)
        extra = {"method": cfg.method, "lambdas": dict(zip([n for n, _, _ in models], lambdas))}
        write_metadata(tmp, "merge", cfg, parents, writer.file_hashes, tokenizer_src=general.path,
                       config=general.config, extra=extra)
        verify_loads(tmp, cfg.verify, set(general.keys()), general.config, _dense_spec(general))
    return Path(cfg.out)


def _reader(view: Dense) -> CheckpointReader:
    return view.reader if isinstance(view, DenseView) else view
