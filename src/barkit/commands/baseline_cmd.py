"""`barkit baseline --method merge|cft|retrain|btx --world DIR --out DIR`: one baseline on the toy world's data."""

from barkit.toy.baselines import BaselineConfig, run_baseline


def run(cfg: BaselineConfig) -> None:
    path, cost = run_baseline(cfg)
    print(f"wrote {cfg.method} baseline to {path}; cost {cost}")
