"""The stage config: typed, nested sections for every training job, with BAR's defaults per stage.

Sections group what each part of training reads (optimizer, schedule, sequences, mixture, checkpointing,
distributed, rl); every field carries help text that `barkit adapt --help` shows. Fields left as None take
the stage's default (`STAGE_DEFAULTS`); `resolve()` fills them in so the resolved config written next to
each checkpoint says exactly what ran. Defaults are the published BAR hyperparameters (docs/design.md);
tiny toy-world models want larger learning rates (~2e-3).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from barkit.errors import BarkitError


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count): `threads`' default."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with help text (shown by `--help`)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


Stage = Literal["pretrain", "midtrain", "sft", "rl", "router"]
STAGES: tuple[str, ...] = ("pretrain", "midtrain", "sft", "rl", "router")
TEXT_STAGES = ("pretrain", "midtrain")
CHAT_STAGES = ("sft", "router")
BAR_STAGES = ("midtrain", "sft", "rl")  # need a 2-expert checkpoint unless `trainable` is explicit

# BAR's progressive unfreezing; aliases are expanded by barkit.train.trainable.
STAGE_TRAINABLE: dict[str, list[str]] = {
    "pretrain": ["all"],
    "midtrain": ["expert:1", "router:1"],
    "sft": ["expert:1", "router:1", "embeddings", "lm_head"],
    "rl": ["expert:1", "router:1", "embeddings", "lm_head", "attention", "norms"],
    "router": ["router"],
}

# BAR's published values per stage: (optim.lr, schedule.kind, schedule.warmup_ratio, epochs)
STAGE_DEFAULTS: dict[str, dict] = {
    "pretrain": {"optim.lr": 1e-3, "schedule.kind": "cosine", "schedule.warmup_ratio": 0.01, "epochs": 1.0},
    "midtrain": {"optim.lr": 9e-4, "schedule.kind": "cosine", "schedule.warmup_ratio": 0.05, "epochs": 1.0},
    "sft": {"optim.lr": 1e-4, "schedule.kind": "linear", "schedule.warmup_ratio": 0.03, "epochs": 2.0},
    "rl": {"optim.lr": 6e-7, "schedule.kind": "constant", "schedule.warmup_ratio": 0.0, "epochs": 1.0},
    "router": {"optim.lr": 1e-4, "schedule.kind": "linear", "schedule.warmup_ratio": 0.03, "epochs": 2.0},
}
STAGE_OBJECTIVE = {"pretrain": "lm", "midtrain": "lm", "sft": "lm", "rl": "grpo", "router": "lm"}


def _positive(section: str, obj: Any, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) < 1:
            raise BarkitError(f"config key '{section}{key}': must be >= 1")


@dataclass
class OptimConfig:
    """AdamW over the trainable tensors (BAR: betas 0.9/0.95, no weight decay, gradient clip 1.0)."""

    lr: float | None = doc("peak learning rate (default: the stage's BAR value)", None)
    weight_decay: float = doc("AdamW weight decay on matrices (never on norms or 1-d tensors)", 0.0)
    betas: list[float] = doc("AdamW betas", factory=lambda: [0.9, 0.95])
    eps: float = doc("AdamW epsilon", 1e-8)
    max_grad_norm: float = doc("clip the global gradient norm to this (0 = no clipping)", 1.0)
    shared_lr_scale: float = doc(
        "lr multiplier for trainable shared tensors (not expert FFNs or the router); < 1 keeps a domain's skill in "
        "its expert, so composing (which averages shared tensors) loses less", 1.0)

    def validate(self) -> None:
        if self.lr is not None and self.lr <= 0:
            raise BarkitError("config key 'optim.lr': must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise BarkitError("config key 'optim.betas': expected two numbers in [0, 1)")
        if not 0 < self.shared_lr_scale <= 1:
            raise BarkitError("config key 'optim.shared_lr_scale': must be in (0, 1]")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.eps <= 0:
            raise BarkitError("config keys 'optim.weight_decay', 'optim.max_grad_norm', 'optim.eps': must be >= 0 "
                              "(eps > 0)")


@dataclass
class ScheduleConfig:
    """Learning rate as a pure function of the step: warmup, then cosine / linear decay or constant."""

    kind: Literal["cosine", "linear", "constant"] | None = doc("decay shape (default: the stage's BAR value)", None)
    warmup_ratio: float | None = doc("share of the steps spent warming up (default: the stage's)", None)
    warmup_steps: int | None = doc("warmup length in steps (overrides warmup_ratio)", None)
    min_lr_ratio: float = doc("decay ends at this fraction of the peak lr", 0.0)

    def validate(self) -> None:
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise BarkitError("config key 'schedule.warmup_ratio': must be in [0, 1)")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise BarkitError("config key 'schedule.warmup_steps': must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise BarkitError("config key 'schedule.min_lr_ratio': must be in [0, 1]")


@dataclass
class SequenceConfig:
    """How text and chats become rows of tokens."""

    seq_len: int = doc("tokens per sequence (packing / truncation)", 128)
    pack_chats: bool = doc("sft/router: several chats per row, attention kept within each chat (same loss, less "
                           "padding)", True)

    def validate(self) -> None:
        _positive("sequences.", self, "seq_len")


@dataclass
class MixtureConfig:
    """Which rows a stage draws: SFT's general-data mix, the router's stratified sample."""

    general_data: list[str] = doc("general chat JSONL mixed into sft", factory=list)
    general_ratio: float | None = doc("fraction of the sft mix drawn from general_data (default 0.5 when given)",
                                      None)
    sample_fraction: float = doc("router: stratified share of each data file (BAR: 5%)", 0.05)
    min_rows_per_file: int = doc("router: at least this many rows per data file", 32)

    def validate(self) -> None:
        _positive("mixture.", self, "min_rows_per_file")
        if not 0 < self.sample_fraction <= 1:
            raise BarkitError("config key 'mixture.sample_fraction': must be in (0, 1]")
        if self.general_ratio is not None and not 0 <= self.general_ratio < 1:
            raise BarkitError("config key 'mixture.general_ratio': must be in [0, 1)")
        if self.general_ratio and not self.general_data:
            raise BarkitError("config key 'mixture.general_data': required when general_ratio > 0")


@dataclass
class CheckpointConfig:
    """Resumable training state (weights, optimizer, RNG, step) under OUT.ckpt."""

    save_every: int = doc("checkpoint every N steps into OUT.ckpt (0 = never)", 0)
    keep: int = doc("keep the newest N checkpoints", 2)
    resume: bool = doc("continue from the last checkpoint in OUT.ckpt", False)

    def validate(self) -> None:
        _positive("checkpoint.", self, "keep")
        if self.save_every < 0:
            raise BarkitError("config key 'checkpoint.save_every': must be >= 0")


@dataclass
class DistributedConfig:
    """Processes, threads and precision (launch several processes with torchrun or accelerate launch)."""

    strategy: Literal["ddp", "fsdp"] = doc(
        "ddp: every process holds the whole model (one process: plain training); fsdp: barkit's FSDP2, weights, "
        "gradients and optimizer state sharded over the processes, every expert split evenly", "ddp")
    threads: int | None = doc("torch threads per process (default: the cores this process may use / processes)",
                              None)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = doc(
        "compute precision: 'no' trains in fp32 throughout; bf16/fp16 load weights in their checkpoint dtype, keep "
        "trainable tensors in fp32 (master weights, gradients, AdamW) and compute in the lower precision "
        "(autocast under ddp, FSDP2's mixed-precision policy with fp32 gradient reduction under fsdp); auto: "
        "bf16 on a GPU that supports it (BAR's choice), 'no' on CPU", "auto")
    activation_checkpointing: bool = doc("recompute each decoder layer's activations in backward (every strategy)",
                                         False)
    deterministic: bool = doc(
        "torch's deterministic algorithms: the same run on the same machine gives the same weights (without them "
        "the MoE experts' grouped_mm backward on CPU differs run to run with several threads); off is slightly "
        "faster where only a nondeterministic kernel exists", True)

    def validate(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise BarkitError("config key 'distributed.threads': must be >= 1")


@dataclass
class RLConfig:
    """GRPO with verifiable rewards (TRL's names where TRL has them; BAR: no KL, 8 samples, upper clip 0.272)."""

    prompts_per_step: int = doc("prompts per optimizer step, all processes", 16)
    num_generations: int = doc("samples per prompt: the GRPO group (Shao et al. 2024, DeepSeekMath)", 8)
    max_new_tokens: int = doc("longest sampled completion", 64)
    temperature: float = doc("sampling temperature", 1.0)
    top_p: float = doc("nucleus sampling mass", 1.0)
    epsilon: float = doc("lower clip of the probability ratio: ratio >= 1 - epsilon (PPO, Schulman et al. 2017)", 0.2)
    epsilon_high: float | None = doc("upper clip: ratio <= 1 + epsilon_high (DAPO's clip-higher, Yu et al. 2025; "
                                     "BAR 0.272); None = epsilon", 0.272)
    beta: float = doc("KL coefficient against the starting model; 0 = no reference model (BAR, DAPO)", 0.0)
    num_iterations: int = doc("optimizer updates per batch of generations (GRPO's mu)", 1)
    loss_type: Literal["dapo", "grpo"] = doc("dapo: mean over all completion tokens of the batch (token-level, "
                                             "DAPO); grpo: mean per sequence, then over sequences", "dapo")
    scale_rewards: Literal["group", "batch", "none"] = doc(
        "divide advantages by the reward std of the group, of the batch, or not at all (Dr. GRPO, Liu et al. 2025)",
        "group")
    dynamic_sampling: bool = doc(
        "DAPO's dynamic sampling: drop groups whose samples all got the same reward (zero advantage, no gradient) "
        "and draw more prompts until prompts_per_step groups carry signal", False)
    max_sampling_rounds: int = doc("with dynamic_sampling, at most this many generation rounds per step (then "
                                   "train on what was kept)", 4)
    eval_data: str | None = doc("held-out rl-prompt JSONL, scored greedily", None)
    eval_every: int = doc("steps between held-out evaluations; 0 = only before and after training", 0)
    eval_max_prompts: int = doc("held-out prompts scored per evaluation", 64)
    eval_samples: int = doc("also score each held-out prompt with this many samples at the training temperature "
                            "(eval_reward_sampled: the expected reward GRPO optimises); 0 = greedy only", 0)
    engine: Literal["hf", "vllm"] = doc("rollout engine: hf (`generate` on the training model) or vllm (an engine in "
                                        "its own process, synced after every optimizer step; the `vllm` extra)", "hf")
    engine_kv_cache_mb: int = doc("vllm on CPU: the engine's KV cache size in MiB", 256)
    engine_gpu_memory_utilization: float | None = doc("vllm on GPU: the share of GPU memory the engine may take "
                                                      "(None: vLLM's default)", None)
    tis_cap: float = doc("vllm: cap of the truncated importance weight min(p_trainer / p_engine, cap) that corrects "
                         "the engine's slightly different sampling probabilities (TIS, as TRL and verl)", 2.0)

    def validate(self) -> None:
        for key in ("prompts_per_step", "num_generations", "max_new_tokens", "num_iterations", "eval_max_prompts",
                    "max_sampling_rounds"):
            if getattr(self, key) < 1:
                raise BarkitError(f"config key 'rl.{key}': must be >= 1")
        if self.num_generations < 2:
            raise BarkitError("config key 'rl.num_generations': GRPO needs at least 2 samples per prompt")
        if self.temperature <= 0:
            raise BarkitError("config key 'rl.temperature': must be > 0 (GRPO samples)")
        if not 0 < self.top_p <= 1:
            raise BarkitError("config key 'rl.top_p': must be in (0, 1]")
        if self.epsilon < 0 or (self.epsilon_high is not None and self.epsilon_high < 0) or self.beta < 0:
            raise BarkitError("config keys 'rl.epsilon', 'rl.epsilon_high', 'rl.beta': must be >= 0")
        if self.eval_every < 0 or self.eval_samples < 0:
            raise BarkitError("config keys 'rl.eval_every', 'rl.eval_samples': must be >= 0")
        if self.engine == "vllm" and self.dynamic_sampling:
            raise BarkitError("config keys 'rl.engine', 'rl.dynamic_sampling': dynamic sampling is not supported with "
                              "the vllm engine yet")
        if self.tis_cap < 1 or self.engine_kv_cache_mb < 1:
            raise BarkitError("config keys 'rl.tis_cap', 'rl.engine_kv_cache_mb': must be >= 1")


@dataclass(kw_only=True)
class StageConfig:
    """One training stage: an input checkpoint, data, and what to train with which objective."""

    stage: Stage = doc("which training stage to run")
    model: str = doc("input checkpoint directory")
    data: list[str] = doc("training data: JSONL / JSON / parquet files, datasets directories or token shards")
    columns: dict = doc("rename source columns to barkit's names, e.g. --columns '{conversation: messages}'",
                        factory=dict)
    out: str = doc("output checkpoint directory")
    objective: str | None = doc("training objective by name (lm, grpo, distill; default: grpo for rl, else lm)",
                                None)
    objective_args: dict = doc("settings of the chosen objective (see its docstring), e.g. "
                               "--set objective_args.teachers=[A,B]", factory=dict)
    trainable: list[str] | None = doc(
        "trainable parameter globs/aliases (default: the stage's BAR set), e.g. expert:1,router:1", None)
    allow_anchor_updates: bool = doc("let trainable globs touch expert 0 / router row 0 (never needed by BAR)",
                                     False)
    expert_name: str | None = doc("name of the trained expert (manifest)", None)
    batch_size: int = doc("sequences per optimizer step, all processes", 32)
    grad_accum: int = doc("micro-batches per optimizer step", 1)
    epochs: float | None = doc("passes over the data (default: the stage's)", None)
    steps: int | None = doc("optimizer steps (overrides epochs)", None)
    seed: int = doc("seed of the batch order, initialisation and sampling", 0)
    route_supervision: float = doc(
        "weight of a router loss that sends domain tokens to expert 1 and general-data tokens to the anchor "
        "(midtrain/sft of a 2-expert model); teaches router rows to specialise, so composed experts do not all "
        "fire on every token (0 = off, BAR)", 0.0)
    log_every: int = doc("write metrics every N steps", 1)
    progress: bool = doc("show a progress bar", True)
    max_shard_size: str = doc("largest output safetensors shard", "1GB")
    verify: Literal["auto", "full", "keys", "none"] = doc(
        "load the output back with transformers (auto: when small enough) and re-check the frozen bytes", "auto")
    overwrite: bool = doc("replace an existing output directory", False)
    optim: OptimConfig = doc("optimizer", factory=OptimConfig)
    schedule: ScheduleConfig = doc("learning-rate schedule", factory=ScheduleConfig)
    sequences: SequenceConfig = doc("tokenisation into rows", factory=SequenceConfig)
    mixture: MixtureConfig = doc("data mixing and sampling", factory=MixtureConfig)
    checkpoint: CheckpointConfig = doc("resumable checkpoints", factory=CheckpointConfig)
    distributed: DistributedConfig = doc("processes, threads, precision", factory=DistributedConfig)
    rl: RLConfig = doc("GRPO (rl stage)", factory=RLConfig)

    def validate(self) -> None:
        _positive("", self, "batch_size", "grad_accum", "log_every")
        if not self.data:
            raise BarkitError("config key 'data': at least one data file is required")
        if self.batch_size % self.grad_accum:
            raise BarkitError(f"config key 'batch_size': {self.batch_size} is not divisible by "
                              f"grad_accum={self.grad_accum}")
        if self.steps is not None and self.steps < 1:
            raise BarkitError("config key 'steps': must be >= 1")
        if self.epochs is not None and self.epochs <= 0:
            raise BarkitError("config key 'epochs': must be > 0")
        if self.route_supervision < 0:
            raise BarkitError("config key 'route_supervision': must be >= 0")
        if self.route_supervision > 0 and self.stage not in ("midtrain", "sft"):
            raise BarkitError(f"config key 'route_supervision': only midtrain and sft take it, not {self.stage}")
        if self.mixture.general_data and self.stage != "sft":
            raise BarkitError(f"config key 'mixture.general_data': only the sft stage mixes general data, "
                              f"not {self.stage}")
        if self.trainable is not None and not self.trainable:
            raise BarkitError("config key 'trainable': empty list (omit it for the stage default)")
        for section in (self.optim, self.schedule, self.sequences, self.mixture, self.checkpoint, self.distributed,
                        self.rl):
            section.validate()

    def resolve(self) -> "StageConfig":
        """A copy with every None default replaced by the stage's value."""
        filled = dataclasses.replace(self, optim=dataclasses.replace(self.optim),
                                     schedule=dataclasses.replace(self.schedule),
                                     mixture=dataclasses.replace(self.mixture))
        filled.distributed = dataclasses.replace(self.distributed)
        if filled.distributed.mixed_precision == "auto":
            gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            filled.distributed.mixed_precision = "bf16" if gpu_bf16 else "no"
        defaults = {**STAGE_DEFAULTS[self.stage], "trainable": list(STAGE_TRAINABLE[self.stage]),
                    "objective": STAGE_OBJECTIVE[self.stage],
                    **({"mixture.general_ratio": 0.5} if self.mixture.general_data else {})}
        for dotted, value in defaults.items():
            *path, key = dotted.split(".")
            node = filled
            for part in path:
                node = getattr(node, part)
            if getattr(node, key) is None:
                setattr(node, key, value)
        return filled
