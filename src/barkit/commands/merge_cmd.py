"""`barkit merge --method ties --general G --pretrained P --models math=CKPT:0.5,code=CKPT --out DIR`.

The module also offers `FoldConfig` (`run` dispatches on the config type), for a `fold` command:
`barkit fold --moe CKPT --expert 1 --out DIR` writes the dense version of one expert.
"""

from barkit.merge import FoldConfig, MergeConfig, fold_expert, merge

POSITIONAL: tuple[str, ...] = ()


def run(cfg: MergeConfig | FoldConfig) -> None:
    if isinstance(cfg, FoldConfig):
        out = fold_expert(cfg.moe, cfg.out, cfg.expert, max_shard_size=cfg.max_shard_size, verify_mode=cfg.verify,
                          overwrite=cfg.overwrite)
        print(f"wrote the dense version of expert {cfg.expert} to {out}")
        return
    out = merge(cfg)
    print(f"wrote {cfg.method} merge of {len(cfg.models)} model(s) into {cfg.general} to {out}")
