"""Memory of a training stage before anything is launched: weights, gradients, optimizer state and activations
per device, and the largest micro-batch that fits.

The model is built on the meta device from its config (no weights are read), the stage's trainable set is
resolved and the anchor's rows split off exactly as `train()` does, and every tensor is counted in the dtype
training holds it in: trainable tensors in fp32 (master weights, gradients, two AdamW moments), frozen ones in
the checkpoint's dtype under mixed precision (fp32 without). With FSDP every tensor, expert tensors included,
is split evenly over the devices. Activations are an estimate per token and layer (see `activation_bytes`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from barkit.arch import moe_spec_of
from barkit.checkpoint import CheckpointReader
from barkit.errors import BarkitError
from barkit.train import trainable
from barkit.train.stages import STAGE_TRAINABLE, Stage

GB = 1e9
MASTER_BYTES = 4  # fp32 master weights and gradients
ADAM_BYTES = 8  # two fp32 moments
# Share of each device the micro-batch sizes leave free: the CUDA context and kernels' workspaces (~1 GB), the
# caching allocator's fragmentation and the activation estimate's error (measured within 1.04x on an H200).
MARGIN = 0.10


@dataclass
class StageMemory:
    """Bytes for the whole model (divide by devices for FSDP's per-device share)."""

    trainable: int  # elements
    total: int  # elements
    weight_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    fused_copy_bytes: int  # per layer: the split expert tensors presented whole (compute dtype) to the modeling code
    layers: int
    hidden: int
    intermediate: int
    active_experts: int
    vocab: int
    compute_bytes: int
    kv_bytes_per_token: int = 0  # keys and values of every layer, in the compute dtype: what generation caches
    unsharded_root_bytes: int = 0  # FSDP keeps the root's tensors (embeddings, lm_head) whole through a step

    def peak_bytes(self, devices: int, sequences: int, seq_len: int, checkpointing: bool) -> int:
        """Per device during a step: the sharded state, the root's whole tensors, the activations."""
        return self.state_bytes // devices + self.unsharded_root_bytes + self.activation_bytes(
            sequences, seq_len, checkpointing)

    def kv_cache_bytes(self, sequences: int, seq_len: int) -> int:
        """The KV cache HF `generate` holds for RL's samples (`sequences` of up to `seq_len` tokens)."""
        return sequences * seq_len * self.kv_bytes_per_token

    @property
    def minimum_bytes(self) -> int:
        """trainable x (gradient + 2 moments) + every weight in its dtype: what no trainer can go below."""
        return self.weight_bytes + self.trainable * (MASTER_BYTES + ADAM_BYTES)

    @property
    def state_bytes(self) -> int:
        return self.weight_bytes + self.grad_bytes + self.optimizer_bytes

    def activation_bytes(self, sequences: int, seq_len: int, checkpointing: bool) -> int:
        """Activations kept for backward, per token and layer: ~8 hidden-size tensors of attention in the compute
        dtype (projection inputs, rotated q and k, the attention output) plus 4 fp32 copies made by the RMSNorms
        (which compute in fp32); per active expert its input, its gate, up and activation outputs and the input
        and output of its down projection; the split expert tensors rebuilt whole (`fused_copy_bytes`); the
        logits in the compute dtype, in fp32 and their fp32 gradient. With checkpointing, one layer's worth
        plus every layer's input. Calibrated on an H200 (a 2x1B FlexOlmo, bf16, 4 x 2,048 tokens: measured
        peaks 0.96-1.01x `peak_bytes`; docs/performance.md)."""
        tokens = sequences * seq_len
        h, i, b = self.hidden, self.intermediate, self.compute_bytes
        per_layer = tokens * (8 * h * b + 4 * h * 4 + self.active_experts * (2 * h + 4 * i) * b)
        logits = tokens * self.vocab * (b + 8)
        if checkpointing:
            return per_layer + self.fused_copy_bytes + tokens * h * b * self.layers + logits
        return (per_layer + self.fused_copy_bytes) * self.layers + logits


def _checkpoint_dtype(model_dir: Path, config) -> torch.dtype:
    try:
        reader = CheckpointReader(model_dir)
        return reader.dtype(reader.keys()[0])
    except BarkitError:  # a config without weights: what it declares
        declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
        return getattr(torch, declared) if isinstance(declared, str) else declared


def stage_memory(model_dir: str | Path, stage: Stage, mixed_precision: bool = True,
                 declared: list[str] | None = None) -> StageMemory:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise BarkitError(f"{model_dir}: no config.json (not a checkpoint directory)")
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    raw = json.loads((model_dir / "config.json").read_text())
    spec = moe_spec_of(raw)
    experts = int(raw[spec.num_experts_key]) if spec else 0
    frozen_dtype = _checkpoint_dtype(model_dir, config) if mixed_precision else torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=frozen_dtype)
    plan = trainable.build_plan(model, declared or STAGE_TRAINABLE[stage], spec, experts, stage, False)
    trainable.apply(plan, model)
    count, total = trainable.count(plan, model)
    trainable.split_rows(plan, model, master_dtype=torch.float32)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    compute_bytes = frozen_dtype.itemsize if mixed_precision else 4
    fused = sum(math.prod(getattr(m, a).shape) * compute_bytes for m in model.modules()
                if torch.nn.utils.parametrize.is_parametrized(m) for a in m.parametrizations)
    layers = int(raw["num_hidden_layers"])
    active = int(raw[spec.top_k_key]) if spec else 1
    # the root FSDP unit is not resharded between forward and backward: its tensors whole in the compute dtype,
    # and (trainable ones) their whole fp32 gradients until the reduce-scatter
    root = [(n, p) for n, p in model.named_parameters() if not n.startswith("model.layers.")]
    unsharded_root = sum(p.numel() * compute_bytes + (p.numel() * MASTER_BYTES if n in plan.full else 0)
                         for n, p in root)
    kv_heads = int(raw.get("num_key_value_heads") or raw["num_attention_heads"])
    head_dim = int(raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"])
    return StageMemory(trainable=count, total=total, weight_bytes=weight_bytes, grad_bytes=count * MASTER_BYTES,
                       optimizer_bytes=count * ADAM_BYTES, fused_copy_bytes=fused // max(layers, 1), layers=layers,
                       hidden=int(raw["hidden_size"]), intermediate=int(raw["intermediate_size"]),
                       active_experts=active, vocab=int(raw["vocab_size"]), compute_bytes=compute_bytes,
                       kv_bytes_per_token=2 * layers * kv_heads * head_dim * compute_bytes,
                       unsharded_root_bytes=unsharded_root)


def largest_micro_batch(memory: StageMemory, devices: int, device_gb: float, seq_len: int,
                        checkpointing: bool) -> int:
    """Sequences per device per micro-batch that fit next to the sharded state and the whole root tensors, `MARGIN`
    of the device held back (0: not even the state fits)."""
    free = device_gb * GB * (1 - MARGIN) - memory.state_bytes / devices - memory.unsharded_root_bytes
    if free <= 0:
        return 0
    fixed = memory.fused_copy_bytes * (1 if checkpointing else memory.layers)  # does not grow with the batch
    per_sequence = memory.activation_bytes(1, seq_len, checkpointing) - fixed
    return max(0, int((free - fixed) // per_sequence))


def plan_table(model_dir: str | Path, stages: list[str], devices: list[int], device_gb: float, seq_len: int,
               mixed_precision: bool = True) -> str:
    """A markdown table: per stage and device count, GB per device and the largest micro-batch."""
    lines = ["| stage | trainable | devices | weights | grads | AdamW | state / device | vs minimum | "
             f"micro-batch @ {seq_len} tok (no ckpt / act. ckpt) |", "|---" * 9 + "|"]
    planned = {}
    for stage in stages:
        mem = planned[stage] = stage_memory(model_dir, stage, mixed_precision)
        for n in devices:
            fits = [largest_micro_batch(mem, n, device_gb, seq_len, ckpt) for ckpt in (False, True)]
            lines.append(f"| {stage} | {mem.trainable / 1e9:.2f}B | {n} | {mem.weight_bytes / n / GB:.1f} | "
                         f"{mem.grad_bytes / n / GB:.1f} | {mem.optimizer_bytes / n / GB:.1f} | "
                         f"{mem.state_bytes / n / GB:.1f} GB | {mem.state_bytes / mem.minimum_bytes:.2f}x | "
                         f"{fits[0]} / {fits[1]} |")
    lines.append(f"\nmicro-batch sizes keep {MARGIN:.0%} of each {device_gb:g} GB device free (CUDA context, allocator "
                 "fragmentation, the activation estimate's error); peak = state + activations, see "
                 "docs/performance.md.")
    if "rl" in planned:
        mem = planned["rl"]
        lines.append(f"\nrl also generates: its KV cache takes {mem.kv_bytes_per_token * seq_len / 2**20:.0f} MiB per "
                     f"sample of {seq_len} tokens ({mem.kv_cache_bytes(64, seq_len) / GB:.1f} GB for 64 samples "
                     "on one device), on top of the state above.")
    return "\n".join(lines) + "\n"
