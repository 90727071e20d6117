"""`barkit select --model DIR --keep math,code --out DIR2 [--drop-anchor] [--top-k K]` (opt-in / opt-out)."""

from barkit.select import SelectConfig, select

POSITIONAL = ("model",)


def run(cfg: SelectConfig) -> None:
    out = select(cfg)
    print(f"wrote MoE with experts {cfg.keep if cfg.drop_anchor else ['anchor', *cfg.keep]} to {out}")
