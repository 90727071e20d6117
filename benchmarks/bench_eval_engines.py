"""`barkit eval` with the vllm engine beside the hf engine on the same model and suite: scores, agreement, speed.

    .venv-vllm/bin/python benchmarks/bench_eval_engines.py --model CKPT --suite toy --world WORLD [--limit N]

Greedy decoding, so both engines should write the same completions; prints each engine's category table, how
many items got identical completions and identical scores, and generation items/s of each, measured in one run.
Run it in the vllm venv (scripts/install.sh --vllm). The toy world's `quick` profile has 24-dimensional attention
heads, below vLLM's CPU minimum of 32: use a `default` world (`barkit world build --profile default`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from barkit.config import load_config
from barkit.eval.harness import EvalConfig, evaluate
from barkit.eval.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--suite", default="toy")
    parser.add_argument("--world")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("hf", "vllm"):
            cfg = load_config(EvalConfig, values={"model": args.model, "suite": args.suite, "world": args.world,
                                                  "limit": args.limit, "engine": engine, "routing": False,
                                                  "out": str(Path(tmp) / engine), "name": engine})
            results[engine] = evaluate(cfg, show_progress=False)
    print(markdown_table(results), end="")
    hf, vllm = ({it["id"]: it for it in results[e]["items"]} for e in ("hf", "vllm"))
    same_text = sum(hf[i]["completions"] == vllm[i]["completions"] for i in hf)
    same_score = sum(hf[i]["score"] == vllm[i]["score"] for i in hf)
    print(f"{len(hf)} items: identical completions {same_text}, identical scores {same_score}")
    for engine in ("hf", "vllm"):
        timing = results[engine]["timing"]
        print(f"{engine}: generation {timing['generation_s']:.1f} s, {timing['items_per_s']:.1f} items/s")


if __name__ == "__main__":
    main()
