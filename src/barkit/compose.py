"""Compose: an anchor and N trained 2-expert BAR checkpoints become one (N+1)-expert MoE.

Expert 0 is the anchor's FFN and expert i the i-th domain's trained expert 1; router row 0 is the mean of the
inputs' row 0 and row i the domain's row 1; every other tensor is the mean over all inputs (or the anchor's).
Tensors stream one key at a time; means and the anchor checks read each input in pieces through reused buffers
and experts are copied file to file, so memory does not grow with the number of experts. Also
`replace_expert`, the tensor half of an expert upgrade.
"""

from __future__ import annotations

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
    hash_outputs_field,
    write_metadata,
)
from barkit.errors import BarkitError
from barkit.mixing import delta_sum_of, mean_of, mean_of_inputs, ties_of, torch_threads
from barkit.moe import (
    ANCHOR,
    NAMES_KEY,
    MoECheckpoint,
    VerifyMode,
    open_moe,
    parse_named,
    routing_config,
    verify_loads,
)
from barkit.outputs import atomic_output_dir
from barkit.select import mask_experts


@dataclass
class ComposeConfig:
    anchor: str = field(metadata={"help": "the branch checkpoint (BAR-2x-Base) or the dense anchor"})
    experts: list[str] = field(metadata={"help": "domain checkpoints as NAME=CKPT (comma-separated)"})
    out: str = field(metadata={"help": "output directory"})
    shared: Literal["mean", "anchor", "sum", "ties"] = field(default="mean", metadata={
        "help": "shared (non-FFN) tensors: mean over all inputs (BAR), the anchor's, sum: the anchor plus "
                "every domain's change to it (task arithmetic), or ties: the anchor plus, per entry, the mean "
                "of the domain changes that agree with the elected sign (TIES without trimming; holds one "
                "tensor per domain in memory)"})
    top_k: int | None = field(default=None, metadata={"help": "experts per token (default: all)"})
    norm_topk_prob: bool = False
    max_shard_size: str = DEFAULT_SHARD_SIZE
    verify: VerifyMode = field(default="auto", metadata={
        "help": "auto: load back with transformers when small enough, else keys"})
    overwrite: bool = False
    hash_outputs: bool = hash_outputs_field()

    def validate(self) -> None:
        pairs = parse_named(self.experts, "experts", reserved=(ANCHOR,))
        if not pairs:
            raise BarkitError("config key 'experts': give at least one NAME=CKPT")
        if self.top_k is not None and not 1 <= self.top_k <= len(pairs) + 1:
            raise BarkitError(f"config key 'top_k': must be between 1 and {len(pairs) + 1}, got {self.top_k}")


def open_domain(path: str, name: str) -> MoECheckpoint:
    """A domain input must be a 2-expert barkit MoE (a branch output trained on one domain)."""
    reader = CheckpointReader(path)
    model_type = reader.config.get("model_type")
    if is_dense(reader.config):
        raise BarkitError(f"{reader.path}: expert '{name}' is a dense '{model_type}' model, not a 2-expert "
                          "barkit MoE (branch it, train it, then compose)")
    moe = open_moe(path)
    if moe.num_experts != 2:
        raise BarkitError(f"{reader.path}: expert '{name}' has {moe.num_experts} experts; compose takes "
                          "2-expert checkpoints (branch outputs trained on one domain)")
    return moe


@dataclass
class Anchor:
    """The anchor as compose sees it: a dense model or a 2-expert branch checkpoint (its expert 0)."""

    reader: CheckpointReader
    spec: ArchSpec
    moe: MoECheckpoint | None

    @property
    def num_layers(self) -> int:
        return int(self.reader.config["num_hidden_layers"])

    def ffn_key(self, role: str, layer: int) -> str:
        return self.moe.expert_key(role, layer, 0) if self.moe else self.spec.dense_key(role, layer)

    def shared_keys(self) -> list[str]:
        if self.moe:
            return self.moe.shared_keys()
        return sorted(set(self.reader.keys()) - self.spec.dense_ffn_keys(self.num_layers))

    def moe_config(self, names: list[str], top_k: int, norm: bool) -> dict:
        if self.moe is None:
            cfg = self.spec.moe_config(self.reader.config, len(names), top_k, norm)
            return {**cfg, NAMES_KEY: names}
        return routing_config(self.spec, self.reader.config, names, top_k, norm)


def open_anchor(path: str) -> Anchor:
    reader = CheckpointReader(path)
    if is_dense(reader.config):
        spec = spec_for_dense(reader.config.get("model_type"), str(reader.path / "config.json"))
        missing = sorted(spec.dense_ffn_keys(int(reader.config["num_hidden_layers"])) - set(reader.keys()))
        if missing:
            raise BarkitError(f"{reader.path}: FFN tensor '{missing[0]}' not found")
        if spec.added_zeros:
            raise BarkitError(f"{reader.path}: a dense {reader.config.get('model_type')} model lacks tensors that "
                              f"{spec.moe_architecture} has (its shared expert); pass the branch checkpoint as "
                              "compose's anchor")
        return Anchor(reader, spec, None)
    moe = open_moe(path)
    if moe.num_experts != 2:
        raise BarkitError(f"{reader.path}: the anchor must be the dense anchor or the 2-expert branch "
                          f"checkpoint, not a {moe.num_experts}-expert MoE")
    return Anchor(reader, moe.spec, moe)


def check_same_architecture(anchor: Anchor, domains: dict[str, MoECheckpoint]) -> None:
    """Same family, same config shape keys, same shared key set and the same shape for every tensor."""
    shared = anchor.shared_keys()
    for name, moe in domains.items():
        where = f"{moe.path} (expert '{name}')"
        if moe.spec is not anchor.spec:
            raise BarkitError(f"{where}: architecture '{moe.reader.config.get('model_type')}' differs from the "
                              f"anchor's '{anchor.reader.config.get('model_type')}'")
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"):
            if moe.reader.config.get(key) != anchor.reader.config.get(key):
                raise BarkitError(f"{where}: config '{key}' is {moe.reader.config.get(key)}, "
                                  f"the anchor's is {anchor.reader.config.get(key)}")
        if moe.shared_keys() != shared:
            diff = sorted(set(moe.shared_keys()) ^ set(shared))
            raise BarkitError(f"{where}: shared tensors differ from the anchor's (e.g. '{diff[0]}')")
        pairs = [(k, k) for k in shared] + [(anchor.ffn_key(r, layer), moe.expert_key(r, layer, e))
                                            for r in ROLES for layer in range(anchor.num_layers) for e in (0, 1)]
        for a_key, d_key in pairs:
            if anchor.reader.shape(a_key) != moe.reader.shape(d_key):
                raise BarkitError(f"{where}: tensor '{d_key}' has shape {moe.reader.shape(d_key)}, "
                                  f"the anchor's is {anchor.reader.shape(a_key)}")


def same_bytes_as(src: CheckpointReader, key: str, others: list[tuple[CheckpointReader, str]],
                  chunk_bytes: int = 8 << 20) -> list[bool]:
    """For each (reader, key) in `others`: does it hold exactly the bytes of `src`'s tensor `key` (bitwise,
    which is what "frozen" means)? Streams `src` once, piece by piece through reused buffers.

    >>> from barkit.tiny import make_dense_checkpoint
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> a, b = (CheckpointReader(make_dense_checkpoint(f"{d}/{i}", seed=i)) for i in range(2))
    >>> k = "model.norm.weight"
    >>> same_bytes_as(a, k, [(a, k), (b, k), (a, "model.layers.0.post_attention_layernorm.weight")], chunk_bytes=24)
    [True, False, False]
    """
    import numpy as np

    size = src.nbytes(key)
    same = [reader.nbytes(other) == size for reader, other in others]
    mine, theirs = np.empty(min(chunk_bytes, size), dtype=np.uint8), np.empty(min(chunk_bytes, size), dtype=np.uint8)
    for start in range(0, size, chunk_bytes):
        n = min(chunk_bytes, size - start)
        src.read_into(key, start, memoryview(mine[:n]))
        for j, (reader, other) in enumerate(others):
            if same[j]:
                reader.read_into(other, start, memoryview(theirs[:n]))
                same[j] = bool(np.array_equal(mine[:n], theirs[:n]))
    return same


def check_anchor_experts(anchor: Anchor, domains: dict[str, MoECheckpoint], role: str, layer: int) -> None:
    """Refuse a domain whose frozen expert 0 is not the anchor's FFN: it was branched from another anchor."""
    anchor_key = anchor.ffn_key(role, layer)
    dtype = anchor.reader.dtype(anchor_key)
    keys = {name: moe.expert_key(role, layer, 0) for name, moe in domains.items()}
    streamed = [name for name, moe in domains.items() if moe.reader.dtype(keys[name]) == dtype]
    same = dict(zip(streamed, same_bytes_as(anchor.reader, anchor_key,
                                            [(domains[n].reader, keys[n]) for n in streamed])))
    for name, moe in domains.items():
        if name not in same:  # e.g. saved in fp32 after bf16 branching: compare the values exactly, widened
            other_T, anchor_T = moe.reader.get(keys[name]), anchor.reader.get(anchor_key)
            wide = torch.promote_types(other_T.dtype, anchor_T.dtype)
            same[name] = torch.equal(other_T.to(wide), anchor_T.to(wide))
        if not same[name]:
            raise BarkitError(f"{moe.path}: expert '{name}' does not share the anchor: its expert 0 "
                              f"'{keys[name]}' differs from {anchor.reader.path}'s anchor FFN (branched from "
                              "another anchor, or expert 0 was trained)")


def write_compose(anchor: Anchor, domains: dict[str, MoECheckpoint], shared_mode: str,
                  writer: ShardedWriter) -> None:
    """Stream the output: per layer the router and every expert, then the shared tensors (mean or anchor's).

    Experts go first because they are kernel copies the writer can run behind while this thread checks the
    anchors and computes the means. Every tensor is written in the anchor's dtype (a domain saved in fp32
    after bf16 branching is cast back).
    """
    inputs = [anchor.reader] + [d.reader for d in domains.values()]
    dtype = anchor.reader.dtype(anchor.ffn_key("down", 0))
    row0_sources = ([anchor.moe] if anchor.moe else []) + list(domains.values())
    for layer in range(anchor.num_layers):
        row0 = mean_of([lambda m=m: m.router(layer)[0] for m in row0_sources])
        rows = [row0] + [d.router(layer)[1].to(row0.dtype) for d in domains.values()]
        writer.add(anchor.spec.router_key(layer), torch.stack(rows).to(dtype))
        for role in ROLES:
            check_anchor_experts(anchor, domains, role, layer)
            writer.add(anchor.spec.expert_key(role, layer, 0), anchor.reader.locate(anchor.ffn_key(role, layer)))
            for i, moe in enumerate(domains.values(), start=1):
                writer.add(anchor.spec.expert_key(role, layer, i), moe.expert_as(role, layer, 1, dtype))
    for key in anchor.shared_keys():
        reads = [lambda r=r: r.get(key) for r in inputs]
        if shared_mode == "sum":
            writer.add(key, delta_sum_of(reads[0], reads[1:]))
        elif shared_mode == "ties":
            writer.add(key, ties_of(reads[0], reads[1:]))
        elif shared_mode == "mean":
            writer.add(key, mean_of_inputs(inputs, key))
        else:  # the anchor's, copied in the kernel
            writer.add(key, anchor.reader.locate(key))


def _verify_compose(out: Path, cfg: ComposeConfig, anchor: Anchor, expected: set[str]) -> None:
    """With shared=anchor, the output routed only to expert 0 must reproduce the anchor's logits."""
    model = verify_loads(out, cfg.verify, expected, anchor.reader.config, anchor.spec)
    if model is None or cfg.shared != "anchor":
        return
    reference = verify.load_strict(anchor.reader.path)
    count = getattr(model.config, anchor.spec.num_experts_key)
    with mask_experts(model, list(range(1, count))), mask_experts(reference, [1] if anchor.moe else []):
        diff = verify.max_logit_diff(model, reference, anchor.reader.config["vocab_size"])
    tol = 1e-4 if anchor.reader.get(anchor.ffn_key("down", 0)).dtype == torch.float32 else 5e-2
    if diff > tol:
        raise BarkitError(f"{out}: logits check failed: expert 0 alone differs from the anchor by {diff:.3g}")


def compose(cfg: ComposeConfig) -> Path:
    """Write the (N+1)-expert MoE described by `cfg`; returns the output directory."""
    pairs = parse_named(cfg.experts, "experts", reserved=(ANCHOR,))
    anchor = open_anchor(cfg.anchor)
    domains = {name: open_domain(path, name) for name, path in pairs}
    check_same_architecture(anchor, domains)
    parents = {ANCHOR: anchor.reader, **{n: m.reader for n, m in domains.items()}}
    for parent in parents.values():
        parent.hash_in_background()  # provenance hashes overlap the streaming below
    names = [ANCHOR] + list(domains)
    config = anchor.moe_config(names, cfg.top_k or len(names), cfg.norm_topk_prob)
    expected = anchor.spec.moe_keys(set(anchor.shared_keys()), anchor.num_layers, len(names))
    check_anchor_experts(anchor, domains, "down", 0)  # fail fast, before writing anything
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=tuple(r.path for r in parents.values())) as tmp:
        with ShardedWriter(tmp, cfg.max_shard_size, hash_outputs=cfg.hash_outputs) as writer, torch_threads(1):
            write_compose(anchor, domains, cfg.shared, writer)
        write_metadata(tmp, "compose", cfg, parents, writer.file_hashes, tokenizer_src=anchor.reader.path,
                       config=config, extra={"experts": names, "arch": anchor.spec.name})
        _verify_compose(tmp, cfg, anchor, expected)
    return Path(cfg.out)


def _write_replaced(src: MoECheckpoint, new: MoECheckpoint, index: int, writer: ShardedWriter) -> None:
    dtype = src.reader.dtype(src.expert_key("down", 0, index))
    for key in src.reader.keys():
        layer = src.spec.parse_router_key(key)
        parsed = src.spec.parse_expert_key(key)
        if layer is not None:
            router = src.router(layer)
            router[index] = new.router(layer)[1].to(router.dtype)
            writer.add(key, router)
        elif parsed is not None and parsed[2] == index:
            writer.add(key, new.expert_as(parsed[0], parsed[1], 1, dtype))
        else:
            writer.add(key, src.reader.locate(key))


def replace_expert(model_dir: str | Path, name: str, new_ckpt: str | Path, out: str | Path, *,
                   max_shard_size: str = DEFAULT_SHARD_SIZE, verify_mode: VerifyMode = "auto",
                   overwrite: bool = False) -> Path:
    """Swap expert `name`'s FFN and router row for `new_ckpt`'s expert 1 / row 1; all else bit-identical.

    The router should be retrained afterwards (the other rows were trained against the old expert).
    """
    src = open_moe(model_dir)
    index = src.index(name)
    if index == 0:
        raise BarkitError(f"{src.path}: expert 0 ('{name}') is the frozen anchor and cannot be replaced")
    new = open_domain(str(new_ckpt), name)
    anchor = Anchor(src.reader, src.spec, src)
    check_same_architecture(anchor, {name: new})
    for layer in range(src.num_layers):
        for role in ROLES:
            check_anchor_experts(anchor, {name: new}, role, layer)
    cfg = {"model": str(model_dir), "replace": f"{name}={new_ckpt}", "out": str(out)}
    with atomic_output_dir(out, overwrite=overwrite, inputs=(src.path, new.path)) as tmp:
        with ShardedWriter(tmp, max_shard_size) as writer:
            _write_replaced(src, new, index, writer)
        config = routing_config(src.spec, src.reader.config, src.names,
                                int(src.reader.config[src.spec.top_k_key]), None)
        write_metadata(tmp, "replace_expert", cfg, {"model": src.reader, name: new.reader}, writer.file_hashes,
                       tokenizer_src=src.path, config=config,
                       extra={"experts": src.names, "replaced": name, "arch": src.spec.name})
        verify_loads(tmp, verify_mode, set(src.reader.keys()), src.reader.config, src.spec)
    return Path(out)
