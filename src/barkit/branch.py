"""Branch: upcycle a dense post-trained model into a 2-expert MoE (frozen anchor expert + trainable expert).

Expert 0 is the anchor's FFN, expert 1 the base (pretrained) model's FFN; every other tensor comes from the
anchor. Tensors stream from the inputs to the output one at a time, so memory stays at a few tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from barkit import verify
from barkit.arch import ROLES, ArchSpec, spec_for_dense
from barkit.checkpoint import (
    DEFAULT_SHARD_SIZE,
    CheckpointReader,
    ShardedWriter,
    hash_outputs_field,
    write_metadata,
)
from barkit.errors import BarkitError
from barkit.outputs import atomic_output_dir
from barkit.prompts import read_prompts

NUM_BRANCH_EXPERTS = 2


@dataclass
class BranchConfig:
    anchor: str = field(metadata={"help": "post-trained dense checkpoint (becomes the frozen expert 0)"})
    out: str = field(metadata={"help": "output directory"})
    base: str | None = field(default=None, metadata={"help": "pretrained dense checkpoint for expert 1 "
                                                              "(default: the anchor)"})
    router_init: Literal["random", "hidden", "embed"] = field(default="random", metadata={"help": "router init"})
    prompts: str | None = field(default=None, metadata={"help": "domain prompts (.txt or .jsonl) for "
                                                                 "hidden/embed router init"})
    max_prompts: int = 256
    seed: int = 0
    top_k: int | None = field(default=None, metadata={"help": "experts per token (default: all)"})
    norm_topk_prob: bool = False
    max_shard_size: str = DEFAULT_SHARD_SIZE
    verify: Literal["auto", "full", "keys", "none"] = field(
        default="auto", metadata={"help": "auto: load back with transformers when small enough, else keys"})
    accept_base_differences: list[str] = field(default_factory=list, metadata={
        "help": "config fields in which the base may differ from the anchor (see SHARED_COMPUTATION_FIELDS); the "
                "MoE keeps the anchor's value, so expert 1 starts from FFN weights trained under another setting"})
    overwrite: bool = False
    hash_outputs: bool = hash_outputs_field()

    def validate(self) -> None:
        if self.router_init != "random" and not self.prompts:
            raise BarkitError(f"config key 'prompts': required for router_init={self.router_init}")
        if self.top_k is not None and not 1 <= self.top_k <= NUM_BRANCH_EXPERTS:
            raise BarkitError(f"config key 'top_k': must be 1 or 2, got {self.top_k}")
        if self.max_prompts < 1:
            raise BarkitError("config key 'max_prompts': must be >= 1")


# Config fields that change what the shared tensors compute (positions, norms, attention, vocabulary). The
# MoE takes the anchor's config, so the anchor is reproduced exactly; a base that differs in one of them gave
# expert 1 FFN weights trained under another setting (e.g. another rope theta), which is refused unless named.
SHARED_COMPUTATION_FIELDS = (
    "rope_theta", "rope_parameters", "rope_scaling", "partial_rotary_factor", "max_position_embeddings",
    "rms_norm_eps", "layer_norm_eps", "hidden_act", "attention_bias", "mlp_bias", "num_attention_heads",
    "num_key_value_heads", "head_dim", "sliding_window", "use_sliding_window", "vocab_size", "tie_word_embeddings",
    "hidden_size", "intermediate_size", "num_hidden_layers",
)


def _differences(anchor: dict, base: dict) -> list[tuple[str, object, object]]:
    """(field, anchor's value, base's value) for each shared-computation field that differs; nested settings
    such as `rope_parameters` are compared key by key (`rope_parameters.rope_theta`)."""
    out = []
    for name in SHARED_COMPUTATION_FIELDS:
        a, b = anchor.get(name), base.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [(f"{name}.{k}", a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append((name, a, b))
    return out


def check_compatible(anchor: CheckpointReader, base: CheckpointReader, spec: ArchSpec,
                     accepted: list[str] | tuple[str, ...] = ()) -> None:
    """Anchor and base must be the same architecture with the same tensor shapes and, unless a field is
    accepted, the same positions, norms, attention and vocabulary (`SHARED_COMPUTATION_FIELDS`)."""
    a_type, b_type = anchor.config.get("model_type"), base.config.get("model_type")
    if b_type not in spec.dense_model_types:
        raise BarkitError(f"{base.path / 'config.json'}: base architecture '{b_type}' differs from the "
                          f"anchor's '{a_type}'")
    for name, a, b in _differences(anchor.config, base.config):
        if name not in accepted and name.split(".")[0] not in accepted:
            raise BarkitError(f"{base.path / 'config.json'}: base has {name}={b!r}, the anchor {a!r}; the MoE keeps "
                              f"the anchor's, under which the base's FFN was not trained (pass "
                              f"--accept-base-differences {name.split('.')[0]} to branch anyway)")
    if set(anchor.keys()) != set(base.keys()):
        diff = sorted(set(anchor.keys()) ^ set(base.keys()))
        raise BarkitError(f"{base.path}: base and anchor have different tensors (e.g. '{diff[0]}')")
    for key in anchor.keys():
        if anchor.shape(key) != base.shape(key):
            raise BarkitError(f"{base.path}: tensor '{key}' has shape {base.shape(key)}, "
                              f"the anchor's is {anchor.shape(key)}")


def _prompt_token_ids(anchor_dir: Path, prompts_path: str, limit: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(anchor_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BarkitError(f"{anchor_dir}: no usable tokenizer for router init ({exc})") from None
    return [tokenizer(text)["input_ids"][:512] or [0] for text in read_prompts(prompts_path, limit)]


def _scaled(direction_H: torch.Tensor, std: float) -> torch.Tensor:
    """Unit direction scaled to the norm a random N(0, std^2) row would have, so logits stay comparable."""
    return direction_H / direction_H.norm().clamp_min(1e-12) * std * direction_H.numel() ** 0.5


@torch.no_grad()
def domain_router_rows(cfg: BranchConfig, anchor: CheckpointReader, num_layers: int) -> list[torch.Tensor]:
    """Per-layer router row for expert 1 from the domain prompts (mergekit's `hidden`, or `embed`)."""
    from transformers import AutoModelForCausalLM

    token_ids = _prompt_token_ids(anchor.path, cfg.prompts, cfg.max_prompts)
    model = AutoModelForCausalLM.from_pretrained(str(anchor.path), dtype=torch.float32, use_safetensors=True,
                                                 local_files_only=True).eval()
    if cfg.router_init == "embed":
        table = model.get_input_embeddings().weight
        mean_H = torch.cat([table[torch.tensor(ids)] for ids in token_ids]).mean(0)
        return [mean_H.clone() for _ in range(num_layers)]
    sums = [torch.zeros(model.config.hidden_size) for _ in range(num_layers)]
    count = 0
    hooks = [layer.mlp.register_forward_hook(lambda mod, inp, out, i=i: sums[i].add_(inp[0][0].sum(0)))
             for i, layer in enumerate(model.model.layers)]
    try:
        for ids in token_ids:
            model(torch.tensor([ids]))
            count += len(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return [s / count for s in sums]


def router_weights(cfg: BranchConfig, anchor: CheckpointReader, num_layers: int, hidden: int,
                   dtype: torch.dtype, std: float) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = [torch.randn(NUM_BRANCH_EXPERTS, hidden, generator=gen) * std for _ in range(num_layers)]
    if cfg.router_init != "random":
        for layer, row_H in enumerate(domain_router_rows(cfg, anchor, num_layers)):
            rows[layer][1] = _scaled(row_H, std)
    return [r.to(dtype) for r in rows]


def write_branch(anchor: CheckpointReader, base: CheckpointReader, spec: ArchSpec, routers: list[torch.Tensor],
                 writer: ShardedWriter) -> None:
    """Stream the anchor's tensors, splitting each FFN projection into expert 0 (anchor) and 1 (base).

    Every tensor but the routers is a byte-for-byte copy, so the writer copies it file to file in the kernel."""
    parsed = {spec.dense_key(r, layer): (r, layer) for r in ROLES for layer in range(len(routers))}
    for key in anchor.keys():
        if key not in parsed:
            writer.add(key, anchor.locate(key))
            continue
        role, layer = parsed[key]
        writer.add(spec.expert_key(role, layer, 0), anchor.locate(key))
        writer.add(spec.expert_key(role, layer, 1), base.locate(key))
        if role == "down":
            writer.add(spec.router_key(layer), routers[layer])
    for key, shape in spec.added_tensors(anchor.config).items():
        writer.add(key, torch.zeros(shape, dtype=routers[0].dtype))


def verify_branch(out: Path, cfg: BranchConfig, anchor: CheckpointReader, spec: ArchSpec, expected: set[str],
                  moe_config: dict, dtype: torch.dtype) -> None:
    """Keys exactly as expected; loaded back, the MoE with expert 1 := expert 0 reproduces the anchor's logits."""
    verify.check_key_set(out, expected)
    if not verify.should_load(out, cfg.verify):
        return
    verify.loaded_config_matches(out, anchor.config, spec.config_checked)
    moe = verify.load_strict(out)
    dense = verify.load_strict(anchor.path)
    for layer in moe.model.layers:
        experts = layer.mlp.experts
        experts.gate_up_proj.data[1] = experts.gate_up_proj.data[0]
        experts.down_proj.data[1] = experts.down_proj.data[0]
    if moe.config.num_experts_per_tok < NUM_BRANCH_EXPERTS and not cfg.norm_topk_prob:
        return  # top-1 without renormalisation scales the FFN output: no exact reference exists
    diff = verify.max_logit_diff(moe, dense, moe_config["vocab_size"])
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    if diff > tol:
        raise BarkitError(f"{out}: logits check failed: MoE differs from the anchor by {diff:.3g} (> {tol})")


def branch(cfg: BranchConfig) -> Path:
    anchor = CheckpointReader(cfg.anchor)
    base = CheckpointReader(cfg.base) if cfg.base else anchor
    spec = spec_for_dense(anchor.config.get("model_type"), str(anchor.path / "config.json"))
    unknown = sorted(set(cfg.accept_base_differences) - set(SHARED_COMPUTATION_FIELDS))
    if unknown:
        raise BarkitError(f"config key 'accept_base_differences': unknown field '{unknown[0]}' "
                          f"(one of {', '.join(SHARED_COMPUTATION_FIELDS)})")
    check_compatible(anchor, base, spec, cfg.accept_base_differences)
    for parent in {id(anchor): anchor, id(base): base}.values():
        parent.hash_in_background()  # provenance hashes overlap the copy below
    num_layers, hidden = anchor.config["num_hidden_layers"], anchor.config["hidden_size"]
    missing = sorted(spec.dense_ffn_keys(num_layers) - set(anchor.keys()))
    if missing:
        raise BarkitError(f"{anchor.path}: FFN tensor '{missing[0]}' not found")
    top_k = cfg.top_k or NUM_BRANCH_EXPERTS
    moe_config = spec.moe_config(anchor.config, NUM_BRANCH_EXPERTS, top_k, cfg.norm_topk_prob)
    dtype = anchor.dtype(spec.dense_key("down", 0))
    routers = router_weights(cfg, anchor, num_layers, hidden, dtype, anchor.config.get("initializer_range", 0.02))
    shared = set(anchor.keys()) - spec.dense_ffn_keys(num_layers) | set(spec.added_tensors(anchor.config))
    expected = spec.moe_keys(shared, num_layers, NUM_BRANCH_EXPERTS)
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=(anchor.path, base.path)) as tmp:
        with ShardedWriter(tmp, cfg.max_shard_size, hash_outputs=cfg.hash_outputs) as writer:
            write_branch(anchor, base, spec, routers, writer)
        parents = {"anchor": anchor} if base is anchor else {"anchor": anchor, "base": base}
        write_metadata(tmp, "branch", cfg, parents, writer.file_hashes, tokenizer_src=anchor.path,
                       config=moe_config, seed=cfg.seed, extra={"experts": ["anchor", "trainable"], "arch": spec.name})
        verify_branch(tmp, cfg, anchor, spec, expected, moe_config, dtype)
    return Path(cfg.out)
