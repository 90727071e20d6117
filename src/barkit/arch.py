"""Architecture tables: how a dense family's checkpoint maps onto its mixture-of-experts counterpart.

Adding a family (say Qwen3 -> Qwen3-MoE) means adding one `ArchSpec` entry to `ARCHITECTURES`; the
surgery code (branch, compose, select, merge) only ever reads these tables. Key templates use `{layer}`
and `{expert}` placeholders; the roles `gate`, `up`, `down` name the three FFN projections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from barkit.errors import BarkitError

ROLES = ("gate", "up", "down")


@dataclass(frozen=True)
class ArchSpec:
    name: str
    dense_model_types: tuple[str, ...]
    moe_model_type: str
    moe_architecture: str
    dense_ffn: dict[str, str]  # role -> dense key template
    expert_ffn: dict[str, str]  # role -> on-disk MoE key template
    router: str  # on-disk router key template, weight [num_experts, hidden]
    num_experts_key: str
    top_k_key: str = "num_experts_per_tok"
    norm_topk_key: str | None = None  # None: the family always renormalises top-k weights
    # Dense config keys that the MoE config must not carry over, and values that make a dense model
    # impossible to express in the MoE family (key -> offending value).
    config_drop: tuple[str, ...] = ()
    unsupported: dict[str, object] = field(default_factory=dict)
    config_fixed: dict[str, object] = field(default_factory=dict)
    config_renamed: dict[str, str] = field(default_factory=dict)  # MoE config key -> the dense key it copies
    # Tensors the MoE family has and the dense model lacks, written as zeros by branch (key template ->
    # shape, from config fields or ints); they must leave the MoE's output equal to the dense model's.
    added_zeros: dict[str, tuple] = field(default_factory=dict)
    # Keys whose values must be identical in dense and MoE configs (checked after translation).
    config_checked: tuple[str, ...] = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                       "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                                       "rope_parameters", "pad_token_id", "bos_token_id", "eos_token_id",
                                       "tie_word_embeddings", "max_position_embeddings", "hidden_act")
    # In-memory (transformers >= 5) fused parameter names, for gradient masking during training.
    fused_gate_up: str = "model.layers.{layer}.mlp.experts.gate_up_proj"  # [E, 2I, H]: gate rows then up rows
    fused_down: str = "model.layers.{layer}.mlp.experts.down_proj"  # [E, H, I]
    memory_router: str = "model.layers.{layer}.mlp.gate.weight"

    def expert_key(self, role: str, layer: int, expert: int) -> str:
        return self.expert_ffn[role].format(layer=layer, expert=expert)

    def dense_key(self, role: str, layer: int) -> str:
        return self.dense_ffn[role].format(layer=layer)

    def router_key(self, layer: int) -> str:
        return self.router.format(layer=layer)

    def dense_ffn_keys(self, num_layers: int) -> set[str]:
        return {self.dense_key(r, layer) for r in ROLES for layer in range(num_layers)}

    def added_tensors(self, config: dict) -> dict[str, torch.Size]:
        """{key: shape} of the zero tensors branch adds (`added_zeros`) for a model with this config."""
        return {template.format(layer=layer): torch.Size(config[d] if isinstance(d, str) else d for d in shape)
                for template, shape in self.added_zeros.items() for layer in range(config["num_hidden_layers"])}

    def moe_keys(self, shared_keys: set[str], num_layers: int, num_experts: int) -> set[str]:
        """The exact on-disk key set of an MoE with these shared tensors."""
        experts = {self.expert_key(r, layer, e) for r in ROLES for layer in range(num_layers)
                   for e in range(num_experts)}
        routers = {self.router_key(layer) for layer in range(num_layers)}
        return set(shared_keys) | experts | routers

    def parse_expert_key(self, key: str) -> tuple[str, int, int] | None:
        """Inverse of `expert_key`: (role, layer, expert), or None for non-expert keys."""
        for role, template in self.expert_ffn.items():
            pattern = re.escape(template).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(
                r"\{expert\}", r"(?P<expert>\d+)")
            m = re.fullmatch(pattern, key)
            if m:
                return role, int(m["layer"]), int(m["expert"])
        return None

    def parse_router_key(self, key: str) -> int | None:
        m = re.fullmatch(re.escape(self.router).replace(r"\{layer\}", r"(\d+)"), key)
        return int(m[1]) if m else None

    def moe_config(self, dense_config: dict, num_experts: int, top_k: int, norm_topk_prob: bool) -> dict:
        """Translate a dense config to the MoE family's config, keeping rope, eps and token ids."""
        for key, bad in self.unsupported.items():
            if dense_config.get(key) == bad:
                raise BarkitError(f"config.json: {key}={bad!r} cannot be expressed as {self.moe_architecture}")
        drop = {"architectures", "model_type", "transformers_version", "_name_or_path", *self.config_drop}
        cfg = {k: v for k, v in dense_config.items() if k not in drop}
        cfg.update(self.config_fixed)
        cfg.update({moe_key: dense_config[dense_key] for moe_key, dense_key in self.config_renamed.items()})
        cfg.update({"model_type": self.moe_model_type, "architectures": [self.moe_architecture],
                    self.num_experts_key: num_experts, self.top_k_key: top_k})
        if self.norm_topk_key is not None:
            cfg[self.norm_topk_key] = norm_topk_prob
        elif not norm_topk_prob and top_k < num_experts:
            raise BarkitError(f"{self.moe_architecture} always renormalises top-k weights; "
                              "use norm_topk_prob=true or top_k = number of experts")
        return cfg


# Key templates most families share: the dense FFN under `mlp`, and experts and router under the MoE's `mlp`.
DENSE_FFN = {r: f"model.layers.{{layer}}.mlp.{r}_proj.weight" for r in ROLES}
MLP_EXPERTS = {r: f"model.layers.{{layer}}.mlp.experts.{{expert}}.{r}_proj.weight" for r in ROLES}
MLP_ROUTER = "model.layers.{layer}.mlp.gate.weight"
# Qwen MoE configs: every layer sparse, none dense-only; the experts are the dense FFN's size
QWEN_ALL_SPARSE = {"output_router_logits": False, "decoder_sparse_step": 1, "mlp_only_layers": []}

ARCHITECTURES: dict[str, ArchSpec] = {
    "olmo2": ArchSpec(
        name="olmo2",
        dense_model_types=("olmo2",),
        moe_model_type="flex_olmo",
        moe_architecture="FlexOlmoForCausalLM",
        dense_ffn=DENSE_FFN,
        expert_ffn=MLP_EXPERTS,
        router=MLP_ROUTER,
        num_experts_key="num_experts",
        norm_topk_key="norm_topk_prob",
        config_fixed={"output_router_logits": False},
    ),
    "llama": ArchSpec(
        name="llama",
        dense_model_types=("llama", "mistral"),
        moe_model_type="mixtral",
        moe_architecture="MixtralForCausalLM",
        dense_ffn=DENSE_FFN,
        expert_ffn={"gate": "model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight",
                    "down": "model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight",
                    "up": "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight"},
        router="model.layers.{layer}.block_sparse_moe.gate.weight",
        num_experts_key="num_local_experts",
        config_drop=("mlp_bias", "pretraining_tp", "attention_bias"),
        unsupported={"mlp_bias": True, "attention_bias": True},
        config_fixed={"output_router_logits": False, "router_jitter_noise": 0.0},
    ),
    "qwen3": ArchSpec(
        name="qwen3",
        dense_model_types=("qwen3",),
        moe_model_type="qwen3_moe",
        moe_architecture="Qwen3MoeForCausalLM",
        dense_ffn=DENSE_FFN,
        expert_ffn=MLP_EXPERTS,
        router=MLP_ROUTER,
        num_experts_key="num_local_experts",
        norm_topk_key="norm_topk_prob",
        config_drop=("layer_types", "max_window_layers"),
        config_fixed=QWEN_ALL_SPARSE,
        config_renamed={"moe_intermediate_size": "intermediate_size"},
    ),
    # Qwen2-MoE always adds a gated shared expert to the routed ones; a zero-width one (no parameters but a
    # zero gate row) adds exactly 0, so the branch reproduces the dense model and costs nothing.
    "qwen2": ArchSpec(
        name="qwen2",
        dense_model_types=("qwen2",),
        moe_model_type="qwen2_moe",
        moe_architecture="Qwen2MoeForCausalLM",
        dense_ffn=DENSE_FFN,
        expert_ffn=MLP_EXPERTS,
        router=MLP_ROUTER,
        num_experts_key="num_experts",
        norm_topk_key="norm_topk_prob",
        config_fixed={**QWEN_ALL_SPARSE, "shared_expert_intermediate_size": 0, "qkv_bias": True},
        config_renamed={"moe_intermediate_size": "intermediate_size"},
        added_zeros={"model.layers.{layer}.mlp.shared_expert.gate_proj.weight": (0, "hidden_size"),
                     "model.layers.{layer}.mlp.shared_expert.up_proj.weight": (0, "hidden_size"),
                     "model.layers.{layer}.mlp.shared_expert.down_proj.weight": ("hidden_size", 0),
                     "model.layers.{layer}.mlp.shared_expert_gate.weight": (1, "hidden_size")},
    ),
}


def supported_dense_types() -> list[str]:
    return sorted(t for spec in ARCHITECTURES.values() for t in spec.dense_model_types)


def spec_for_dense(model_type: str | None, source: str = "config.json") -> ArchSpec:
    for spec in ARCHITECTURES.values():
        if model_type in spec.dense_model_types:
            return spec
    moe = [s for s in ARCHITECTURES.values() if s.moe_model_type == model_type]
    hint = " (this is already a mixture-of-experts checkpoint)" if moe else ""
    raise BarkitError(f"{source}: unsupported architecture '{model_type}'{hint}; "
                      f"supported dense families: {', '.join(supported_dense_types())}")


def spec_for_moe(model_type: str | None, source: str = "config.json") -> ArchSpec:
    for spec in ARCHITECTURES.values():
        if spec.moe_model_type == model_type:
            return spec
    raise BarkitError(f"{source}: '{model_type}' is not a barkit mixture-of-experts checkpoint; supported: "
                      f"{', '.join(moe_model_types())}")


def num_experts(spec: ArchSpec, config: dict) -> int:
    return int(config[spec.num_experts_key])


def moe_spec_of(config: dict) -> ArchSpec | None:
    """The family table of an MoE config (a config.json dict or a transformers config), None if it is not one."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return next((s for s in ARCHITECTURES.values() if s.moe_model_type == model_type), None)


def is_dense(config: dict) -> bool:
    """A dense model of a supported family (the input of branch, merge and the dense baselines)."""
    return config.get("model_type") in supported_dense_types()


def moe_model_types() -> list[str]:
    return sorted(s.moe_model_type for s in ARCHITECTURES.values())
