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
    timing, placed = results["timing"], results["placement"]
    print(f"{timing['items']} items, {timing['items_per_s']:.1f} items/s, {timing['tokens_per_s']:.0f} generated "
          f"tokens/s ({placed['engine']} on {placed['device']}, {placed['dtype']})")
