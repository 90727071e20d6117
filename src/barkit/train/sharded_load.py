"""Model loading for training: one layer at a time from safetensors; under FSDP every rank keeps only its shard.

Loading the whole model on every rank before sharding costs ranks x model of host memory (8 x 49 GB for the
BAR-5x7B router stage on 8 GPUs). Here the model is built with its parameters on the meta device (buffers such
as rotary frequencies are computed as usual), the stage's trainable set resolved and the anchor's rows split
off on the meta tensors, then each decoder layer in turn is read from the checkpoint, put into the model in
the dtype training holds it in and (FSDP) `fully_shard`-ed, which keeps this rank's slice and frees the rest;
the embeddings, final norm and lm_head last. A rank's peak is its shard plus one layer (and the embeddings).
Without FSDP the same reading keeps host memory at one layer while the model fills the device, where
`from_pretrained(...).to(device)` held the whole model on the host first.

transformers' loader fuses a layer's experts in memory (`gate_up_proj` [E, 2I, H], `down_proj` [E, H, I]) from
per-expert tensors on disk; barkit's architecture tables (`barkit.arch`) say how, so `memory_tensor` rebuilds
each in-memory tensor from the on-disk ones. A family whose layout the tables do not cover falls back to the
whole-model load (`plan_layout` returns None), and a test checks every family against transformers' loader.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from accelerate import init_empty_weights
from torch.nn.utils import parametrize

from barkit.arch import ArchSpec
from barkit.checkpoint import CheckpointReader
from barkit.train import trainable

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def _sources(spec: ArchSpec | None, num_experts: int, name: str) -> tuple[str, list[str]]:
    """How in-memory parameter `name` is built from checkpoint keys: ("gate_up", the gate keys then the up keys,
    one per expert: stacked and concatenated), ("down", one per expert: stacked) or ("plain", [its key])."""
    layer = _LAYER.match(name)
    if spec is not None and layer is not None:
        i = int(layer.group(1))
        if name == spec.fused_gate_up.format(layer=i):
            return "gate_up", [spec.expert_key(r, i, e) for r in ("gate", "up") for e in range(num_experts)]
        if name == spec.fused_down.format(layer=i):
            return "down", [spec.expert_key("down", i, e) for e in range(num_experts)]
        if name == spec.memory_router.format(layer=i):
            return "plain", [spec.router_key(i)]
    return "plain", [name]


def memory_tensor(reader: CheckpointReader, spec: ArchSpec | None, num_experts: int, name: str) -> torch.Tensor:
    """The tensor transformers would hold under in-memory parameter `name`, read from the checkpoint."""
    kind, keys = _sources(spec, num_experts, name)
    if kind == "gate_up":
        return torch.stack([torch.cat([reader.get(g), reader.get(u)]) for g, u in zip(keys[:num_experts],
                                                                                       keys[num_experts:])])
    if kind == "down":
        return torch.stack([reader.get(k) for k in keys])
    return reader.get(keys[0])


def plan_layout(reader: CheckpointReader, spec: ArchSpec | None, num_experts: int,
                model: torch.nn.Module) -> bool:
    """Whether every in-memory parameter of `model` (on the meta device) can be rebuilt from the checkpoint
    with its exact shape, without reading any tensor."""
    for name, param in model.named_parameters():
        kind, keys = _sources(spec, num_experts, name)
        if not all(k in reader for k in keys):
            return False
        first = reader.shape(keys[0])
        expected = {"gate_up": [num_experts, 2 * first[0], *first[1:]], "down": [num_experts, *first],
                    "plain": first}[kind]
        if expected != list(param.shape):
            return False
    return True


def meta_model(reader: CheckpointReader, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint's model with parameters on the meta device and real buffers, in training mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(str(reader.path), local_files_only=True)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if (reader.path / "generation_config.json").is_file():  # as from_pretrained would (RL samples with it)
        model.generation_config = GenerationConfig.from_pretrained(str(reader.path), local_files_only=True)
    return model.train()


def _replace(model: torch.nn.Module, old: torch.nn.Parameter, new: torch.nn.Parameter) -> None:
    """Put `new` wherever `old` is registered (tied weights are one parameter under two names)."""
    for module in model.modules():
        for key, value in module._parameters.items():
            if value is old:
                module._parameters[key] = new


def fill(model: torch.nn.Module, plan: trainable.TrainablePlan, prefix: str, read: Callable[[str], torch.Tensor],
         device: torch.device, digests: dict[str, bytes]) -> None:
    """Materialise every parameter under `prefix` (split pieces included) from `read(stock_name)` on `device`,
    each in the dtype its meta tensor has; record the sha256 of every frozen byte (`trainable.frozen_digest`)."""
    module = model.get_submodule(prefix) if prefix else model
    for sub_name, sub in list(module.named_modules(prefix=prefix)):
        if parametrize.is_parametrized(sub):
            for attr in list(sub.parametrizations):
                stock = f"{sub_name}.{attr}"
                pieces = getattr(sub.parametrizations, attr)
                if not pieces.original0.is_meta:  # an earlier layer's, already sharded
                    continue
                full = read(stock)
                digests[stock] = trainable.frozen_digest(plan, stock, full)
                split = pieces[0]
                for piece, rows in (("original0", split.frozen_rows), ("original1", split.trainable_rows)):
                    old = pieces._parameters[piece]
                    pieces._parameters[piece] = torch.nn.Parameter(
                        full[rows].to(device=device, dtype=old.dtype), requires_grad=old.requires_grad)
        for key, old in list(sub._parameters.items()):
            if old is None or not old.is_meta:
                continue
            stock = f"{sub_name}.{key}" if sub_name else key
            full = read(stock)
            digests[stock] = trainable.frozen_digest(plan, stock, full)
            new = torch.nn.Parameter(full.to(device=device, dtype=old.dtype), requires_grad=old.requires_grad)
            _replace(model, old, new)


def load_layers(reader: CheckpointReader, spec: ArchSpec | None, num_experts: int, cfg, device: torch.device,
                dtype: torch.dtype, shard: bool = False, compute_dtype: torch.dtype | None = None,
                ) -> tuple[torch.nn.Module, trainable.TrainablePlan, str, str] | None:
    """(the model, the stage's trainable plan, the frozen fingerprint, the plan's table), read one layer at a time
    onto `device` in the dtypes training holds (frozen tensors in `dtype`, trainable ones in fp32, the anchor's
    rows split off). With `shard`, every layer is `fully_shard`-ed as soon as it is read (FSDP2 with
    `compute_dtype` as param_dtype, activation checkpointing applied first), so a rank keeps only its slices;
    without, the whole model ends up on `device` (one process, DDP) but host memory holds one layer at a time.
    None when the checkpoint's layout is not one `memory_tensor` rebuilds."""
    from barkit.train.fsdp import checkpoint_layers, shard_unit

    model = meta_model(reader, dtype)
    if not plan_layout(reader, spec, num_experts, model):
        return None
    plan = trainable.build_plan(model, cfg.trainable, spec, num_experts, cfg.stage, cfg.allow_anchor_updates)
    trainable.apply(plan, model)
    table = trainable.table(plan, model)
    trainable.split_rows(plan, model, master_dtype=torch.float32)
    if shard and cfg.distributed.activation_checkpointing:
        checkpoint_layers(model)
    digests: dict[str, bytes | None] = {}

    def read(name: str) -> torch.Tensor:
        return memory_tensor(reader, spec, num_experts, name)

    for i, layer in enumerate(model.model.layers):
        fill(model, plan, f"model.layers.{i}", read, device, digests)
        if shard:
            shard_unit(layer, model, spec, compute_dtype)
    fill(model, plan, "", read, device, digests)  # embeddings, final norm, lm_head
    if shard:
        shard_unit(model, model, spec, compute_dtype)
    else:
        model.to(device)  # the buffers (rotary frequencies) were built on the CPU
    return model, plan, trainable.fingerprint_of(digests), table
