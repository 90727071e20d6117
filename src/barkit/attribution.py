"""Routing attribution: how much routing weight each (named) expert receives, per layer and overall."""

from __future__ import annotations

import torch

from barkit.arch import moe_spec_of
from barkit.moe import NAMES_KEY, default_expert_names


def is_moe(model) -> bool:
    return moe_spec_of(model.config) is not None


def expert_names(model) -> list[str]:
    """The loaded model's expert names (config's `barkit_expert_names`, else anchor, expert1, ...)."""
    spec = moe_spec_of(model.config)
    n = getattr(model.config, spec.num_experts_key)
    names = getattr(model.config, NAMES_KEY, None)
    return list(names) if names and len(names) == n else default_expert_names(n)


def gate_weights(router_logits_TE: torch.Tensor, top_k: int, renormalise: bool) -> torch.Tensor:
    """The weights the MoE actually applies: softmax (fp32), top-k kept, optionally renormalised.

    >>> w = gate_weights(torch.tensor([[0.0, 0.0, -1e9]]), top_k=2, renormalise=False)
    >>> w.tolist()
    [[0.5, 0.5, 0.0]]
    """
    probs_TE = torch.softmax(router_logits_TE.float(), dim=-1)
    top_vals, top_idx = torch.topk(probs_TE, top_k, dim=-1)
    if renormalise:
        top_vals = top_vals / top_vals.sum(-1, keepdim=True)
    return torch.zeros_like(probs_TE).scatter(-1, top_idx, top_vals)


def _applied_weights_BTE(model, input_ids: torch.Tensor, **inputs) -> list[torch.Tensor]:
    """Per layer, the routing weights the MoE applies to every token: [batch, tokens, experts]."""
    cfg = model.config
    out = model(input_ids=input_ids, output_router_logits=True, **inputs)
    renorm = getattr(cfg, "norm_topk_prob", True)  # Mixtral always renormalises
    return [gate_weights(logits_TE, cfg.num_experts_per_tok, renorm).reshape(*input_ids.shape, -1)
            for logits_TE in out.router_logits]


@torch.no_grad()
def routing_weights(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean routing weight per layer and expert over the real (non-padding) tokens: tensor [layers, experts]."""
    mask_BT = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool()
    layers = _applied_weights_BTE(model, input_ids, attention_mask=attention_mask)
    return torch.stack([w_BTE[mask_BT].mean(0) for w_BTE in layers])


@torch.no_grad()
def routing_weights_per_sequence(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean routing weight over its real tokens, from one padded forward pass: [batch, layers,
    experts]. Position ids follow the mask, so left padding does not shift the real tokens' positions."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    layers = _applied_weights_BTE(model, input_ids, attention_mask=attention_mask, position_ids=positions)
    mask_BT1 = attention_mask.to(torch.float32).unsqueeze(-1)
    return torch.stack([(w_BTE * mask_BT1).sum(1) / mask_BT1.sum(1) for w_BTE in layers], dim=1)


def describe_routing(weights_LE: torch.Tensor, names: list[str]) -> str:
    overall = weights_LE.mean(0)
    parts = [f"{n} {100 * w:.0f}%" for n, w in zip(names, overall.tolist())]
    return "routing: " + ", ".join(parts)
