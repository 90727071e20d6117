"""`barkit inspect`: what a checkpoint is (architecture, experts, parameter counts, router, provenance)."""

from __future__ import annotations

from pathlib import Path

from barkit.arch import ROLES, moe_spec_of
from barkit.checkpoint import CheckpointReader


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def describe(path: str | Path) -> dict:
    """Summary dict: architecture, experts (with names when recorded), total/active parameters, router shape."""
    ckpt = CheckpointReader(path)
    model_type = ckpt.config.get("model_type")
    total = sum(_numel(ckpt.shape(k)) for k in ckpt.keys())
    info = {"path": str(ckpt.path), "model_type": model_type, "architectures": ckpt.config.get("architectures"),
            "layers": ckpt.config.get("num_hidden_layers"), "hidden_size": ckpt.config.get("hidden_size"),
            "total_params": total, "active_params": total, "weight_files": len(ckpt.weight_files)}
    spec = moe_spec_of(ckpt.config)
    manifest = ckpt.manifest()
    if spec is not None:
        n_exp = int(ckpt.config[spec.num_experts_key])
        top_k = int(ckpt.config.get(spec.top_k_key, n_exp))
        per_expert = sum(_numel(ckpt.shape(spec.expert_key(r, layer, 0)))
                         for r in ROLES for layer in range(ckpt.config["num_hidden_layers"]))
        info.update(experts=n_exp, top_k=top_k, router_shape=ckpt.shape(spec.router_key(0)),
                    active_params=total - (n_exp - top_k) * per_expert, params_per_expert=per_expert,
                    norm_topk_prob=ckpt.config.get(spec.norm_topk_key) if spec.norm_topk_key else True)
        if manifest and manifest.get("experts"):
            info["expert_names"] = manifest["experts"]
    if manifest:
        info["manifest"] = {k: manifest.get(k) for k in ("stage", "barkit_version", "seed", "command")}
        info["manifest"]["parents"] = {k: v.get("path") for k, v in manifest.get("parents", {}).items()}
    return info


def format_description(info: dict) -> str:
    lines = []
    for key, value in info.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {v}" for k, v in value.items()]
        elif isinstance(value, int) and key.endswith("params"):
            lines.append(f"{key}: {value:,}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
