"""`barkit select --model DIR --keep math,code --out DIR2 [--drop-anchor] [--top-k K]` (opt-in / opt-out)."""

from barkit.checkpoint import read_manifest
from barkit.select import SelectConfig, select

POSITIONAL = ("model",)


def run(cfg: SelectConfig) -> None:
    out = select(cfg)
    experts = (read_manifest(out) or {}).get("experts")  # as written: the anchor once, whether listed or not
    print(f"wrote MoE with experts {experts} to {out}")
