"""Evaluation throughput (items/s) on the toy suite, per category, for one model.

    python benchmarks/bench_eval.py WORLD_DIR [MODEL_DIR]   (default model: WORLD_DIR/anchor)
"""

import sys
import tempfile
from collections import Counter

from barkit.eval.harness import EvalConfig, evaluate


def main() -> None:
    world = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else f"{world}/anchor"
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (16, 64):
            res = evaluate(EvalConfig(model=model, suite="toy", world=world, out=tmp, batch_size=batch,
                                      max_new_tokens=64, routing=False), show_progress=False)
            t = res["timing"]
            counts = Counter(r["category"] for r in res["items"])
            print(f"batch {batch:3d}: {t['items']} items ({dict(counts)}), generation {t['generation_s']:.1f} s, "
                  f"scoring {t['scoring_s']:.1f} s -> {t['items_per_s']:.1f} items/s")


if __name__ == "__main__":
    main()
