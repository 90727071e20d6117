"""The MoE checkpoint view shared by every weight-surgery command (compose, select, merge, fold, upgrade).

An MoE on disk is a lazy reader plus its family's key table (`barkit.arch`) plus expert names; this module
opens one, names its experts, writes the routing part of its config and checks an output loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from barkit import verify
from barkit.arch import ArchSpec, num_experts, spec_for_moe
from barkit.checkpoint import CheckpointReader, TensorBytes
from barkit.errors import BarkitError

ANCHOR = "anchor"
NAMES_KEY = "barkit_expert_names"  # extra config.json key; transformers keeps unknown keys
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
VerifyMode = Literal["auto", "full", "keys", "none"]


def parse_named(items: list[str], key: str, reserved: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Parse `NAME=CKPT` items; names are unique, path-safe and not reserved."""
    pairs = []
    for item in items:
        name, sep, path = (s.strip() for s in item.partition("="))
        if not sep or not name or not path:
            raise BarkitError(f"config key '{key}': {item!r} is not NAME=CKPT")
        if not _NAME_RE.fullmatch(name):
            raise BarkitError(f"config key '{key}': name {name!r} may only use letters, digits, '_.-'")
        if name in reserved:
            raise BarkitError(f"config key '{key}': the name {name!r} is reserved for expert 0")
        if name in (n for n, _ in pairs):
            raise BarkitError(f"config key '{key}': duplicate expert name {name!r}")
        pairs.append((name, path))
    return pairs


def default_expert_names(count: int) -> list[str]:
    return [ANCHOR] + [f"expert{i}" for i in range(1, count)]


def expert_names(reader: CheckpointReader, count: int) -> list[str]:
    """Names from config.json, else the manifest, else anchor/expert1/...; one per expert."""
    names = reader.config.get(NAMES_KEY) or (reader.manifest() or {}).get("experts")
    names = list(names) if names else default_expert_names(count)
    if len(names) != count or len(set(names)) != count:
        raise BarkitError(f"{reader.path}: expert names {names} do not match its {count} experts")
    return names


@dataclass
class MoECheckpoint:
    """A barkit MoE on disk: its lazy reader, family table and expert names."""

    reader: CheckpointReader
    spec: ArchSpec
    names: list[str]

    @property
    def path(self) -> Path:
        return self.reader.path

    @property
    def num_layers(self) -> int:
        return int(self.reader.config["num_hidden_layers"])

    @property
    def num_experts(self) -> int:
        return len(self.names)

    def expert_key(self, role: str, layer: int, expert: int) -> str:
        return self.spec.expert_key(role, layer, expert)

    def expert(self, role: str, layer: int, expert: int) -> torch.Tensor:
        return self.reader.get(self.spec.expert_key(role, layer, expert))

    def router(self, layer: int) -> torch.Tensor:
        return self.reader.get(self.spec.router_key(layer))

    def expert_as(self, role: str, layer: int, expert: int, dtype: torch.dtype) -> torch.Tensor | TensorBytes:
        """The expert tensor in `dtype`: left on disk for the writer to copy when it already has that dtype."""
        loc = self.reader.locate(self.spec.expert_key(role, layer, expert))
        return loc if loc.dtype == dtype else self.expert(role, layer, expert).to(dtype)

    def shared_keys(self) -> list[str]:
        return sorted(k for k in self.reader.keys()
                      if self.spec.parse_expert_key(k) is None and self.spec.parse_router_key(k) is None)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise BarkitError(f"{self.path}: no expert named {name!r} (experts: {', '.join(self.names)})")
        return self.names.index(name)


def open_moe(path: str | Path) -> MoECheckpoint:
    """Open a barkit MoE checkpoint and check that its tensors are exactly an MoE's."""
    reader = CheckpointReader(path)
    spec = spec_for_moe(reader.config.get("model_type"), str(reader.path / "config.json"))
    count = num_experts(spec, reader.config)
    moe = MoECheckpoint(reader, spec, expert_names(reader, count))
    expected = spec.moe_keys(set(moe.shared_keys()), moe.num_layers, count)
    missing = sorted(expected - set(reader.keys()))
    if missing:
        raise BarkitError(f"{reader.path}: tensor '{missing[0]}' is missing")
    return moe


def routing_config(spec: ArchSpec, moe_config: dict, names: list[str], top_k: int, norm: bool | None) -> dict:
    """An MoE config with a new expert count, names and routing; norm=None keeps the source's setting."""
    cfg = {k: v for k, v in moe_config.items() if k not in ("_name_or_path", "transformers_version")}
    cfg.update({spec.num_experts_key: len(names), spec.top_k_key: top_k, NAMES_KEY: list(names)})
    if norm is not None and spec.norm_topk_key is not None:
        cfg[spec.norm_topk_key] = norm
    elif norm is False and spec.norm_topk_key is None and top_k < len(names):
        raise BarkitError(f"{spec.moe_architecture} always renormalises top-k weights; "
                          "use norm_topk_prob=true or top_k = number of experts")
    return cfg


@torch.no_grad()
def verify_loads(out: Path, mode: str, expected: set[str], source_config: dict, spec: ArchSpec):
    """Key set always; when small enough, load with stock transformers and run a finite forward pass.

    Returns the loaded model (or None) so callers can run their own functional check on it.
    """
    verify.check_key_set(out, expected)
    if not verify.should_load(out, mode):
        return None
    verify.loaded_config_matches(out, source_config, spec.config_checked)
    model = verify.load_strict(out)
    ids = torch.randint(0, int(source_config["vocab_size"]), (2, 8), generator=torch.Generator().manual_seed(0))
    if not torch.isfinite(model(ids).logits).all():
        raise BarkitError(f"{out}: the written model produces non-finite logits")
    return model


