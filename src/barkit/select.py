"""Opt-in / opt-out (FlexOlmo): keep only some experts of a composed MoE, with no retraining.

`select` writes a smaller MoE in which the excluded experts' FFNs and router rows are absent (not zeroed);
`load_selected` builds the same smaller model in memory without writing anything; `mask_experts` sets the
excluded experts' router logits to -inf on a full model. With the same top-k, all three route identically:
softmax over the kept logits is exactly softmax over all logits with the others at -inf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from barkit import verify
from barkit.arch import ROLES, spec_for_moe
from barkit.checkpoint import DEFAULT_SHARD_SIZE, ShardedWriter, hash_outputs_field, write_metadata
from barkit.errors import BarkitError
from barkit.moe import ANCHOR, MoECheckpoint, VerifyMode, open_moe, routing_config, verify_loads
from barkit.outputs import atomic_output_dir


@dataclass
class SelectConfig:
    model: str = field(metadata={"help": "a composed barkit MoE checkpoint"})
    keep: list[str] = field(metadata={"help": "expert names to keep (comma-separated); the anchor is always "
                                              "kept unless --drop-anchor"})
    out: str = field(metadata={"help": "output directory"})
    drop_anchor: bool = False
    top_k: int | None = field(default=None, metadata={
        "help": "experts per token (default: the source's, clamped to the kept count)"})
    max_shard_size: str = DEFAULT_SHARD_SIZE
    verify: VerifyMode = "auto"
    overwrite: bool = False
    hash_outputs: bool = hash_outputs_field()

    def validate(self) -> None:
        if len(set(self.keep)) != len(self.keep):
            raise BarkitError(f"config key 'keep': duplicate expert names in {self.keep}")
        if self.drop_anchor and ANCHOR in self.keep:
            raise BarkitError(f"config key 'keep': lists '{ANCHOR}' but drop_anchor is set")
        if self.top_k is not None and self.top_k < 1:
            raise BarkitError(f"config key 'top_k': must be >= 1, got {self.top_k}")


def kept_indices(moe: MoECheckpoint, keep: list[str], drop_anchor: bool = False) -> list[int]:
    """Original indices of the kept experts, in their original order (so renumbering keeps the order)."""
    wanted = {moe.index(name) for name in keep}
    if not drop_anchor:
        wanted.add(0)
    if not wanted:
        raise BarkitError(f"{moe.path}: the selection keeps no expert")
    return sorted(wanted)


def selected_top_k(moe: MoECheckpoint, kept: list[int], top_k: int | None) -> int:
    if top_k is not None and top_k > len(kept):
        raise BarkitError(f"config key 'top_k': {top_k} exceeds the {len(kept)} kept experts")
    return top_k or min(int(moe.reader.config[moe.spec.top_k_key]), len(kept))


def selected_config(moe: MoECheckpoint, kept: list[int], top_k: int | None) -> dict:
    names = [moe.names[i] for i in kept]
    return routing_config(moe.spec, moe.reader.config, names, selected_top_k(moe, kept, top_k), None)


def write_selected(moe: MoECheckpoint, kept: list[int], writer: ShardedWriter) -> None:
    for key in moe.shared_keys():
        writer.add(key, moe.reader.locate(key))
    for layer in range(moe.num_layers):
        writer.add(moe.spec.router_key(layer), moe.router(layer)[kept].clone())
        for role in ROLES:
            for new, old in enumerate(kept):
                writer.add(moe.spec.expert_key(role, layer, new), moe.reader.locate(moe.expert_key(role, layer, old)))


def _verify_select(out: Path, cfg: SelectConfig, moe: MoECheckpoint, kept: list[int], top_k: int) -> None:
    """The written model must give the full model's logits with the excluded experts masked to -inf."""
    expected = moe.spec.moe_keys(set(moe.shared_keys()), moe.num_layers, len(kept))
    model = verify_loads(out, cfg.verify, expected, moe.reader.config, moe.spec)
    if model is None:
        return
    full = verify.load_strict(moe.path)
    with mask_experts(full, [i for i in range(moe.num_experts) if i not in kept], top_k=top_k):
        diff = verify.max_logit_diff(model, full, moe.reader.config["vocab_size"])
    if diff > 1e-4:
        raise BarkitError(f"{out}: logits check failed: differs from the masked full model by {diff:.3g}")


def select(cfg: SelectConfig) -> Path:
    """Write the MoE restricted to the kept experts (renumbered in their original order)."""
    moe = open_moe(cfg.model)
    kept = kept_indices(moe, cfg.keep, cfg.drop_anchor)
    config = selected_config(moe, kept, cfg.top_k)
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=(moe.path,)) as tmp:
        with ShardedWriter(tmp, cfg.max_shard_size, hash_outputs=cfg.hash_outputs) as writer:
            write_selected(moe, kept, writer)
        names = [moe.names[i] for i in kept]
        write_metadata(tmp, "select", cfg, {"model": moe.reader}, writer.file_hashes, tokenizer_src=moe.path,
                       config=config, extra={"experts": names, "selected_from": kept, "arch": moe.spec.name})
        _verify_select(tmp, cfg, moe, kept, config[moe.spec.top_k_key])
    return Path(cfg.out)


def _fill(params: dict[str, torch.nn.Parameter], filled: set[str], key: str, index, value: torch.Tensor) -> None:
    if key not in params:
        raise BarkitError(f"checkpoint tensor maps to '{key}', which the model does not have")
    target = params[key].data[index]
    if target.shape != value.shape:
        raise BarkitError(f"parameter '{key}': checkpoint shape {list(value.shape)}, model {list(target.shape)}")
    target.copy_(value)
    filled.add(key)


@torch.no_grad()
def load_selected(model_dir: str | Path, keep: list[str], dtype: torch.dtype = torch.float32,
                  drop_anchor: bool = False, top_k: int | None = None):
    """The selected smaller MoE, built in memory from only the kept experts' tensors (nothing written).

    Tensors are copied one at a time into a model built from the smaller config, in transformers' fused
    in-memory layout (`gate_up_proj [E, 2I, H]`, gate rows then up rows; `down_proj [E, H, I]`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    moe = open_moe(model_dir)
    kept = kept_indices(moe, keep, drop_anchor)
    cfg = selected_config(moe, kept, top_k)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    params, filled, spec = dict(model.named_parameters()), set(), moe.spec
    for key in moe.shared_keys():
        if key not in params and key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied to the input embeddings
        _fill(params, filled, key, slice(None), moe.reader.get(key))
    inter = int(moe.reader.config["intermediate_size"])
    parts = {"gate": (spec.fused_gate_up, slice(0, inter)), "up": (spec.fused_gate_up, slice(inter, 2 * inter)),
             "down": (spec.fused_down, slice(None))}
    for layer in range(moe.num_layers):
        _fill(params, filled, spec.memory_router.format(layer=layer), slice(None), moe.router(layer)[kept])
        for role in ROLES:
            template, rows = parts[role]
            for new, old in enumerate(kept):
                _fill(params, filled, template.format(layer=layer), (new, rows), moe.expert(role, layer, old))
    missing = sorted(set(params) - filled)
    if missing:
        raise BarkitError(f"{moe.path}: no tensor for the model's parameter '{missing[0]}'")
    return model.eval()


def _routers(model) -> list[torch.nn.Module]:
    spec = spec_for_moe(model.config.model_type, "model")
    return [model.get_submodule(spec.memory_router.format(layer=i).removesuffix(".weight"))
            for i in range(model.config.num_hidden_layers)]


def _masked_router_hook(drop: list[int], top_k: int | None):
    """Forward hook recomputing the router's outputs with the dropped experts' logits at -inf.

    Mirrors transformers' FlexOlmo/Mixtral routers: softmax in fp32, top-k, optional renormalisation
    (FlexOlmo: `norm_topk_prob`; Mixtral always renormalises).
    """
    def hook(module, args, output):
        hidden = args[0].reshape(-1, module.hidden_dim)
        logits = F.linear(hidden, module.weight)
        logits[:, drop] = float("-inf")
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        k = min(top_k or module.top_k, module.num_experts - len(drop))
        top_value, top_index = torch.topk(probs, k, dim=-1)
        if getattr(module, "norm_topk_prob", True):
            top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        if hasattr(module, "norm_topk_prob"):
            top_value = top_value.to(logits.dtype)
        return logits, top_value, top_index

    return hook


class ExpertMask:
    """The hooks installed by `mask_experts`; `remove()` (or leaving the `with` block) restores the model."""

    def __init__(self, handles: list) -> None:
        self._handles = handles

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ExpertMask:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def mask_experts(model, drop_indices: list[int], top_k: int | None = None) -> ExpertMask:
    """Route as if the experts in `drop_indices` were absent (their router logits at -inf).

    Use as `with mask_experts(model, [2]): ...`, or keep the handle and call `remove()`.
    `top_k` defaults to the model's, clamped to the experts that remain. Works on FlexOlmo and Mixtral models
    loaded with transformers.
    """
    drop = sorted(set(drop_indices))
    if not drop:
        return ExpertMask([])
    routers = _routers(model)
    count = routers[0].num_experts
    if any(not 0 <= i < count for i in drop):
        raise BarkitError(f"mask_experts: expert indices {drop} out of range for {count} experts")
    if len(drop) >= count:
        raise BarkitError("mask_experts: cannot drop every expert")
    hook = _masked_router_hook(drop, top_k)
    return ExpertMask([router.register_forward_hook(hook) for router in routers])
