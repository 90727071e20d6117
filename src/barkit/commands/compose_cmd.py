"""`barkit compose --anchor A --experts math=CKPT,code=CKPT --out DIR [--shared mean|anchor] [--top-k K]`."""

from barkit.compose import ComposeConfig, compose

POSITIONAL = ("anchor",)


def run(cfg: ComposeConfig) -> None:
    out = compose(cfg)
    print(f"wrote {len(cfg.experts) + 1}-expert MoE to {out}")
