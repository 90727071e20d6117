"""The stage config: one typed dataclass for every training job, with BAR's defaults per stage.

Fields left as None take the stage's default (`STAGE_DEFAULTS`); `resolve()` fills them in so the
resolved config written next to each checkpoint says exactly what ran. Defaults are the published BAR
hyperparameters (docs/design.md); tiny toy-world models want larger learning rates (~2e-3).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal

from barkit.errors import BarkitError


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count): `threads`' default."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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

STAGE_DEFAULTS: dict[str, dict] = {
    "pretrain": dict(lr=1e-3, schedule="cosine", warmup_ratio=0.01, epochs=1.0),
    "midtrain": dict(lr=9e-4, schedule="cosine", warmup_ratio=0.05, epochs=1.0),
    "sft": dict(lr=1e-4, schedule="linear", warmup_ratio=0.03, epochs=2.0),
    "rl": dict(lr=6e-7, schedule="constant", warmup_ratio=0.0, epochs=1.0),
    "router": dict(lr=1e-4, schedule="linear", warmup_ratio=0.03, epochs=2.0),
}


@dataclass
class RLConfig:
    """GRPO settings (TRL's names where TRL has them)."""

    prompts_per_step: int = 16
    num_generations: int = field(default=8, metadata={"help": "samples per prompt (the GRPO group)"})
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    epsilon: float = 0.2  # lower clip: ratio >= 1 - epsilon
    epsilon_high: float | None = 0.272  # upper clip (BAR's asymmetric clipping); None = epsilon
    beta: float = 0.0  # KL coefficient; 0 = no reference model (BAR)
    num_iterations: int = 1  # optimizer updates per batch of generations
    loss_type: Literal["dapo", "grpo"] = "dapo"  # dapo: mean over all completion tokens; grpo: per sequence
    scale_rewards: Literal["group", "batch", "none"] = "group"
    dynamic_sampling: bool = field(default=False, metadata={
        "help": "DAPO's dynamic sampling: drop groups whose samples all got the same reward (zero advantage, "
                "no gradient) and draw more prompts until prompts_per_step groups carry signal"})
    max_sampling_rounds: int = field(default=4, metadata={
        "help": "with dynamic_sampling, at most this many generation rounds per step (then train on what "
                "was kept)"})
    eval_data: str | None = field(default=None, metadata={"help": "held-out rl-prompt JSONL, scored greedily"})
    eval_every: int = 0  # steps between held-out evaluations; 0 = only before and after training
    eval_max_prompts: int = 64
    eval_samples: int = field(default=0, metadata={
        "help": "also score each held-out prompt with this many samples at the training temperature "
                "(eval_reward_sampled: the expected reward GRPO optimises); 0 = greedy only"})

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


@dataclass
class StageConfig:
    stage: Stage = field(metadata={"help": "which training stage to run"})
    model: str = field(metadata={"help": "input checkpoint directory"})
    data: list[str] = field(metadata={"help": "training data JSONL file(s), comma separated"})
    out: str = field(metadata={"help": "output checkpoint directory"})
    trainable: list[str] | None = field(default=None, metadata={
        "help": "trainable parameter globs/aliases (default: the stage's BAR set), e.g. expert:1,router:1"})
    allow_anchor_updates: bool = field(default=False, metadata={
        "help": "let trainable globs touch expert 0 / router row 0 (never needed by BAR)"})
    expert_name: str | None = field(default=None, metadata={"help": "name of the trained expert (manifest)"})
    general_data: list[str] = field(default_factory=list, metadata={"help": "general chat JSONL mixed into sft"})
    general_ratio: float | None = field(default=None, metadata={
        "help": "fraction of the sft mix drawn from general_data (default 0.5 when given)"})
    sample_fraction: float = field(default=0.05, metadata={"help": "router: stratified share of each file"})
    min_rows_per_file: int = field(default=32, metadata={"help": "router: at least this many rows per file"})
    seq_len: int = field(default=128, metadata={"help": "tokens per sequence (packing / truncation)"})
    pack_chats: bool = field(default=True, metadata={
        "help": "sft/router: several chats per row, attention kept within each chat (same loss, less padding)"})
    batch_size: int = field(default=32, metadata={"help": "sequences per optimizer step, all processes"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    epochs: float | None = None
    steps: int | None = field(default=None, metadata={"help": "optimizer steps (overrides epochs)"})
    lr: float | None = None
    schedule: Literal["cosine", "linear", "constant"] | None = None
    warmup_ratio: float | None = None
    warmup_steps: int | None = field(default=None, metadata={"help": "overrides warmup_ratio"})
    min_lr_ratio: float = 0.0
    route_supervision: float = field(default=0.0, metadata={
        "help": "weight of a router loss that sends domain tokens to expert 1 and general-data tokens to the "
                "anchor (midtrain/sft of a 2-expert model); teaches router rows to specialise, so composed "
                "experts do not all fire on every token (0 = off, BAR)"})
    shared_lr_scale: float = field(default=1.0, metadata={
        "help": "lr multiplier for trainable shared tensors (not expert FFNs or the router); < 1 keeps a "
                "domain's skill in its expert, so composing (which averages shared tensors) loses less"})
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps into OUT.ckpt (0 = never)"})
    keep_checkpoints: int = 2
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in OUT.ckpt"})
    log_every: int = 1
    threads: int | None = field(default=None, metadata={"help": "torch threads per process (default: cores)"})
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    progress: bool = True
    max_shard_size: str = "1GB"
    verify: Literal["auto", "full", "none"] = "auto"
    overwrite: bool = False
    rl: RLConfig = field(default_factory=RLConfig)

    def validate(self) -> None:
        positive = ("seq_len", "batch_size", "grad_accum", "keep_checkpoints", "log_every", "min_rows_per_file")
        for key in positive:
            if getattr(self, key) < 1:
                raise BarkitError(f"config key '{key}': must be >= 1")
        if not self.data:
            raise BarkitError("config key 'data': at least one data file is required")
        if self.batch_size % self.grad_accum:
            raise BarkitError(f"config key 'batch_size': {self.batch_size} is not divisible by "
                              f"grad_accum={self.grad_accum}")
        if self.steps is not None and self.steps < 1:
            raise BarkitError("config key 'steps': must be >= 1")
        if self.epochs is not None and self.epochs <= 0:
            raise BarkitError("config key 'epochs': must be > 0")
        if self.lr is not None and self.lr <= 0:
            raise BarkitError("config key 'lr': must be > 0")
        if self.route_supervision < 0:
            raise BarkitError("config key 'route_supervision': must be >= 0")
        if self.route_supervision > 0 and self.stage not in ("midtrain", "sft"):
            raise BarkitError(f"config key 'route_supervision': only midtrain and sft take it, not {self.stage}")
        if not 0 < self.shared_lr_scale <= 1:
            raise BarkitError("config key 'shared_lr_scale': must be in (0, 1]")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise BarkitError("config key 'warmup_ratio': must be in [0, 1)")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise BarkitError("config key 'warmup_steps': must be >= 0")
        if self.save_every < 0:
            raise BarkitError("config key 'save_every': must be >= 0")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise BarkitError("config key 'adam_betas': expected two numbers in [0, 1)")
        if not 0 < self.sample_fraction <= 1:
            raise BarkitError("config key 'sample_fraction': must be in (0, 1]")
        if self.general_ratio is not None and not 0 <= self.general_ratio < 1:
            raise BarkitError("config key 'general_ratio': must be in [0, 1)")
        if self.general_ratio and not self.general_data:
            raise BarkitError("config key 'general_data': required when general_ratio > 0")
        if self.general_data and self.stage != "sft":
            raise BarkitError(f"config key 'general_data': only the sft stage mixes general data, "
                              f"not {self.stage}")
        if self.trainable is not None and not self.trainable:
            raise BarkitError("config key 'trainable': empty list (omit it for the stage default)")
        if self.threads is not None and self.threads < 1:
            raise BarkitError("config key 'threads': must be >= 1")

    def resolve(self) -> "StageConfig":
        """A copy with every None default replaced by the stage's value."""
        defaults = {**STAGE_DEFAULTS[self.stage], "trainable": list(STAGE_TRAINABLE[self.stage])}
        if self.general_data:
            defaults["general_ratio"] = 0.5
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **filled)
