"""`barkit eval MODEL --suite toy --world DIR` and `barkit eval --compare A,B,C --out DIR`."""

from pathlib import Path

from barkit.eval.harness import EvalConfig, compare, evaluate
from barkit.eval.report import markdown_table

POSITIONAL = ("model",)


def run(cfg: EvalConfig) -> None:
    if cfg.compare:
        print(compare(cfg.compare, Path(cfg.out or "comparison")), end="")
        return
    results = evaluate(cfg)
    print(markdown_table({results["name"]: results}), end="")
    print(f"{results['timing']['items']} items, {results['timing']['items_per_s']:.1f} items/s")
