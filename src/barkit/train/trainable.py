"""Trainable parameters declared as globs over in-memory parameter names, with row selectors for slices.

transformers 5 fuses the experts of a layer into one tensor (`mlp.experts.gate_up_proj [E, 2I, H]`), so
"train expert 1 only" selects rows of a parameter: `model.layers.*.mlp.experts.gate_up_proj[1]`.
Readable aliases expand to such globs (`expert:1`, `router:1`, `embeddings`, ...). A parameter is then
fully trainable, frozen (requires_grad off, never given to the optimizer) or partial. A partial one is
split (`split_rows`): a torch parametrization presents `cat(frozen rows, trainable rows)` under the stock
attribute name, so the stock modeling code runs unchanged while the frozen rows are a tensor of their
own, outside autograd and the optimizer, kept in the checkpoint's dtype. No gradient, Adam moment or
restore copy exists for the anchor. `fuse_rows` puts the stock tensor back before saving. A fingerprint of
every frozen byte is taken before and after training and must match.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.nn.utils import parametrize

from barkit.arch import ArchSpec
from barkit.errors import BarkitError

_SELECTOR = re.compile(r"^(?P<glob>[^\[\]]+?)(?:\[(?P<rows>[0-9, ]+)\])?$")
_EXPERT_ALIAS = re.compile(r"^(?P<kind>expert|router):(?P<index>\d+)$")


@dataclass(frozen=True)
class Selector:
    """One glob over parameter names, optionally restricted to rows (dim 0) of the matched tensors."""

    glob: str
    rows: tuple[int, ...] | None
    declared: str  # the user's entry this came from (alias or glob), for error messages


@dataclass
class TrainablePlan:
    """Which parameters train: whole tensors, or rows of a tensor (name -> sorted trainable rows)."""

    declared: list[str]
    full: list[str] = field(default_factory=list)
    partial: dict[str, list[int]] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)

    def trainable_names(self) -> list[str]:
        return sorted([*self.full, *self.partial])


def memory_templates(spec: ArchSpec) -> dict[str, str]:
    star = {"layer": "*"}
    return {"gate_up": spec.fused_gate_up.format(**star), "down": spec.fused_down.format(**star),
            "router": spec.memory_router.format(**star)}


def expand_entry(entry: str, spec: ArchSpec | None, num_experts: int, tied: bool) -> list[Selector]:
    """Expand an alias (or pass a raw `glob[rows]` through) into selectors.

    >>> [s.glob for s in expand_entry("attention", None, 0, False)]
    ['model.layers.*.self_attn.*']
    """
    entry = entry.strip()
    simple = {"all": ["*"], "embeddings": ["model.embed_tokens.weight"],
              "lm_head": ["model.embed_tokens.weight" if tied else "lm_head.weight"],
              "attention": ["model.layers.*.self_attn.*"], "norms": ["*norm*"], "mlp": ["model.layers.*.mlp.*"]}
    if entry in simple:
        return [Selector(g, None, entry) for g in simple[entry]]
    match = _EXPERT_ALIAS.match(entry)
    if entry in ("router", "experts") or match:
        if spec is None:
            raise BarkitError(f"config key 'trainable': '{entry}' needs a mixture-of-experts model")
        names = memory_templates(spec)
        if entry == "router":
            return [Selector(names["router"], None, entry)]
        if entry == "experts":
            return [Selector(names["gate_up"], None, entry), Selector(names["down"], None, entry)]
        index = int(match["index"])
        if index >= num_experts:
            raise BarkitError(f"config key 'trainable': '{entry}' but the model has {num_experts} experts")
        if match["kind"] == "router":
            return [Selector(names["router"], (index,), entry)]
        return [Selector(names["gate_up"], (index,), entry), Selector(names["down"], (index,), entry)]
    parsed = _SELECTOR.match(entry)
    if not parsed:
        raise BarkitError(f"config key 'trainable': cannot parse '{entry}' (expected an alias or glob[rows])")
    rows = parsed["rows"]
    return [Selector(parsed["glob"], tuple(int(r) for r in rows.split(",") if r.strip()) if rows else None, entry)]


def protected_rows(spec: ArchSpec | None, stage: str) -> list[Selector]:
    """The anchor: expert 0 (and router row 0, except in router training, which retrains every row)."""
    if spec is None or stage == "pretrain":
        return []
    names = memory_templates(spec)
    keep = [Selector(names["gate_up"], (0,), "expert:0"), Selector(names["down"], (0,), "expert:0")]
    if stage != "router":
        keep.append(Selector(names["router"], (0,), "router:0"))
    return keep


def _rows_of(selector: Selector, name: str, param: torch.Tensor) -> set[int]:
    size = param.shape[0] if param.dim() else 1
    if selector.rows is None:
        return set(range(size))
    bad = [r for r in selector.rows if r >= size]
    if bad:
        raise BarkitError(f"config key 'trainable': '{selector.declared}' selects row {bad[0]} of '{name}', "
                          f"which has {size} rows")
    return set(selector.rows)


def _match(selectors: list[Selector], params: dict[str, torch.Tensor]) -> dict[str, set[int]]:
    rows: dict[str, set[int]] = defaultdict(set)
    for sel in selectors:
        hits = [n for n in params if fnmatch.fnmatchcase(n, sel.glob)]
        if not hits:
            raise BarkitError(f"config key 'trainable': '{sel.declared}' matches no parameter "
                              f"(pattern '{sel.glob}')")
        for name in hits:
            rows[name] |= _rows_of(sel, name, params[name])
    return rows


def build_plan(model: torch.nn.Module, declared: list[str], spec: ArchSpec | None, num_experts: int,
               stage: str, allow_anchor_updates: bool) -> TrainablePlan:
    """Resolve the declaration against the model; refuse globs that match nothing or touch the anchor."""
    params = dict(model.named_parameters())
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    selectors = [s for entry in declared for s in expand_entry(entry, spec, num_experts, tied)]
    rows = _match(selectors, params)
    if not allow_anchor_updates:
        for keep in protected_rows(spec, stage):
            for name, kept in _match([keep], params).items():
                if rows.get(name, set()) & kept:
                    culprit = next(s.declared for s in selectors if fnmatch.fnmatchcase(name, s.glob)
                                   and _rows_of(s, name, params[name]) & kept)
                    raise BarkitError(f"config key 'trainable': '{culprit}' touches the anchor ({keep.declared}, "
                                      f"'{name}'); set allow_anchor_updates: true if that is intended")
    plan = TrainablePlan(declared=list(declared))
    for name, param in params.items():
        selected = rows.get(name, set())
        size = param.shape[0] if param.dim() else 1
        if len(selected) == size:
            plan.full.append(name)
        elif selected:
            plan.partial[name] = sorted(selected)
        else:
            plan.frozen.append(name)
    return plan


def _frozen_index(plan: TrainablePlan, name: str, param: torch.Tensor) -> torch.Tensor:
    keep = set(plan.partial[name])
    return torch.tensor([r for r in range(param.shape[0]) if r not in keep], dtype=torch.long,
                        device=param.device)


def count(plan: TrainablePlan, model: torch.nn.Module) -> tuple[int, int]:
    """(trainable elements, total elements)."""
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    trainable = sum(params[n].numel() for n in plan.full)
    trainable += sum(params[n][0].numel() * len(r) for n, r in plan.partial.items())
    return trainable, total


def apply(plan: TrainablePlan, model: torch.nn.Module) -> None:
    """Set requires_grad, then check the model now trains exactly the declared set."""
    trainable = set(plan.trainable_names())
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    actual = {n for n, p in model.named_parameters() if p.requires_grad}
    if actual != trainable:
        raise BarkitError(f"trainable set mismatch: {sorted(actual ^ trainable)[:3]}")
    if not trainable:
        raise BarkitError("config key 'trainable': nothing to train")


class RowSplit(torch.nn.Module):
    """Parametrization of a partially trainable tensor: (frozen rows, trainable rows) -> the full tensor in
    its original row order. The frozen piece keeps its own dtype; the result has the trainable piece's, or
    `compute_dtype` when set (mixed precision without FSDP: the bf16 tensor the forward pass computes with, as
    FSDP's param_dtype presents it; gradients still reach the fp32 trainable rows)."""

    compute_dtype: torch.dtype | None = None

    def __init__(self, frozen_rows: list[int], trainable_rows: list[int]):
        super().__init__()
        order = [*frozen_rows, *trainable_rows]
        self.frozen_rows, self.trainable_rows = list(frozen_rows), list(trainable_rows)
        self.in_order = order == sorted(order)
        self.register_buffer("inverse", torch.tensor(sorted(range(len(order)), key=order.__getitem__)),
                             persistent=False)

    def forward(self, frozen: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype or trainable.dtype
        full = torch.cat([frozen.to(dtype), trainable.to(dtype)])
        return full if self.in_order else full.index_select(0, self.inverse.to(full.device))

    def right_inverse(self, full: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return full[self.frozen_rows].detach().clone(), full[self.trainable_rows].detach().clone()


_SPLIT_NAME = re.compile(r"\.parametrizations\.(?P<attr>[^.]+)\.original\d+$")


def stock_name(name: str) -> str:
    """The stock parameter name behind a split piece's name (`...experts.parametrizations.down_proj.original1`
    -> `...experts.down_proj`); other names unchanged."""
    return _SPLIT_NAME.sub(lambda m: "." + m["attr"], name)


def _owner(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return model.get_submodule(path), attr


def split_rows(plan: TrainablePlan, model: torch.nn.Module, master_dtype: torch.dtype | None = None) -> None:
    """Hold every partial tensor's frozen rows apart from its trainable rows (see the module docstring); every
    trainable tensor or piece is cast to `master_dtype` when given. Frozen ones keep their dtype."""
    params = dict(model.named_parameters())
    for name in plan.full:
        if master_dtype is not None:
            params[name].data = params[name].data.to(master_dtype)
    for name in sorted(plan.partial):
        module, attr = _owner(model, name)
        size = getattr(module, attr).shape[0]
        trainable_rows = plan.partial[name]
        frozen_rows = [r for r in range(size) if r not in set(trainable_rows)]
        parametrize.register_parametrization(module, attr, RowSplit(frozen_rows, trainable_rows), unsafe=True)
        pieces = getattr(module.parametrizations, attr)
        pieces.original0.requires_grad_(False)
        if master_dtype is not None:
            pieces.original1.data = pieces.original1.data.to(master_dtype)


def fuse_rows(model: torch.nn.Module) -> None:
    """Undo `split_rows`: every split tensor becomes one stock parameter again (for saving and checks)."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations):
                getattr(module.parametrizations, attr)[0].compute_dtype = None  # keep the fp32 master rows
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)


def compute_in(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Mixed precision without FSDP: autocast lowers the matmuls, but fp32 trainable embeddings would carry an
    fp32 residual stream through every layer and split expert tensors would be rebuilt in fp32 (measured on an
    H200: 1.7x the planned peak memory, a quarter of FSDP's tokens/s). Present both in `dtype`, as FSDP's
    param_dtype does; master weights, gradients and optimizer state stay fp32."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                getattr(module.parametrizations, attr)[0].compute_dtype = dtype
    model.get_input_embeddings().register_forward_hook(lambda _m, _i, out: out.to(dtype))


def frozen_digest(plan: TrainablePlan, name: str, tensor: torch.Tensor) -> bytes | None:
    """sha256 of the frozen bytes of stock tensor `name` (its frozen rows if partial; None if fully trainable),
    as fp32 so the checkpoint's dtype and a widened copy agree."""
    if name in plan.full:
        return None
    tensor = tensor.detach()
    if name in plan.partial:
        tensor = tensor[_frozen_index(plan, name, tensor)]
    return hashlib.sha256(tensor.float().cpu().contiguous().view(torch.uint8).numpy().tobytes()).digest()


def fingerprint_of(digests: dict[str, bytes | None]) -> str:
    """One digest over per-tensor `frozen_digest`s, in name order (so they can be gathered in any order)."""
    h = hashlib.sha256()
    for name in sorted(digests):
        if digests[name] is not None:
            h.update(name.encode())
            h.update(digests[name])
    return h.hexdigest()


def frozen_fingerprint(plan: TrainablePlan, model: torch.nn.Module) -> str:
    """sha256 over every frozen byte (whole frozen tensors and the frozen rows of partial ones)."""
    return fingerprint_of({name: frozen_digest(plan, name, p) for name, p in model.named_parameters()})


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+\.", ".*.", name, count=1)


def table(plan: TrainablePlan, model: torch.nn.Module) -> str:
    """A readable table of the trainable set: one line per name pattern (layers collapsed)."""
    params = dict(model.named_parameters())
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for name, param in params.items():
        if name in plan.full:
            what, n = "all", param.numel()
        elif name in plan.partial:
            rows = plan.partial[name]
            what, n = f"rows {rows} of {param.shape[0]}", param[0].numel() * len(rows)
        else:
            continue
        groups[(_pattern(name), what)][0] += n
        groups[(_pattern(name), what)][1] += param.numel()
    trainable, total = count(plan, model)
    width = max((len(p) for p, _ in groups), default=10)
    lines = [f"trainable parameters (declared: {', '.join(plan.declared)})"]
    lines += [f"  {pattern:<{width}}  {what:<16} {n:>12,d} / {size:,d}" for (pattern, what), (n, size) in
              sorted(groups.items())]
    lines.append(f"  total: {trainable:,d} of {total:,d} ({100 * trainable / max(total, 1):.1f}%)")
    return "\n".join(lines)
