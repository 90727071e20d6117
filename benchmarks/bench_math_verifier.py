"""barkit's math reward beside `math_verify.verify` called directly, on the same (gold, completion) pairs.

    python benchmarks/bench_math_verifier.py [--pairs FILE.jsonl] [--n 400] [--seed 0]

Pairs default to a generated set of a few hundred: the truth table of tests/eval/test_math_answers.py plus
random golds of every kind (integers with separators, fractions, decimals, radicals, pi multiples, intervals,
tuples, sets, percentages), each with one right completion (another form of the same value) and one wrong one
(a value that shares a number with the gold). `--pairs` takes JSONL rows `{"gold", "completion"}` (and an
optional `truth`). Direct math-verify is the usual call: `verify(parse("$\\boxed{gold}$"), parse(completion))`.

Prints agreement between the two, accuracy against the truth where it is known, the disagreements by kind,
and the median time per item of each (one run, side by side, math-verify's parse caches cleared before each
call).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from barkit.eval.math_answers import judge_math


def generated(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    kinds = {
        "integer": lambda a, b: (f"{a * 1000 + b:,}", f"The total is {a * 1000 + b}.",
                                 f"\\boxed{{{a * 1000 + b + 1}}}"),
        "fraction": lambda a, b: (f"\\frac{{{a}}}{{{a + b}}}", f"\\boxed{{\\frac{{{2 * a}}}{{{2 * (a + b)}}}}}",
                                  f"\\boxed{{\\frac{{{a + b}}}{{{a}}}}}"),
        "decimal": lambda a, b: (f"\\frac{{{a}}}{{4}}", f"\\boxed{{{a / 4}}}", f"\\boxed{{{a / 4 + 1}}}"),
        "radical": lambda a, b: (f"{a}\\sqrt{{2}}", f"\\boxed{{\\sqrt{{{2 * a * a}}}}}", f"\\boxed{{{a}}}"),
        "pi": lambda a, b: (f"\\frac{{{a}\\pi}}{{{b + 1}}}", f"\\boxed{{\\frac{{{a}}}{{{b + 1}}}\\pi}}",
                            f"\\boxed{{\\frac{{{a}}}{{{b + 1}}}}}"),
        "interval": lambda a, b: (f"[{a},{a + b})", f"\\boxed{{[{a}, {a + b})}}", f"\\boxed{{({a},{a + b})}}"),
        "tuple": lambda a, b: (f"({a},{b})", f"\\boxed{{({a}, {b})}}", f"\\boxed{{{b}}}"),
        "set": lambda a, b: (f"\\{{{a},{a + b}\\}}", f"\\boxed{{\\{{{a + b},{a}\\}}}}", f"\\boxed{{\\{{{a}\\}}}}"),
        "percent": lambda a, b: (f"{a}\\%", f"\\boxed{{{a}\\%}}", f"\\boxed{{{a + 1}\\%}}"),
    }
    pairs = []
    for i in range(n // 2):
        kind = list(kinds)[i % len(kinds)]
        gold, right, wrong = kinds[kind](rng.randint(1, 9), rng.randint(1, 9))
        pairs += [{"gold": gold, "completion": f"Working... so {right}", "truth": True, "kind": kind},
                  {"gold": gold, "completion": f"Working... so {wrong}", "truth": False, "kind": kind}]
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "eval"))
    from test_math_answers import CASES

    pairs += [{"gold": g, "completion": c, "truth": t, "kind": "table"} for g, c, t in CASES]
    return pairs


def direct(gold: str, completion: str) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(f"$\\boxed{{{gold}}}$"), parse(completion)))


def clear_caches() -> None:
    """math-verify memoises parses: without this the second caller of a pair would time cache hits."""
    from math_verify import parser

    parser.parse_latex_cached.cache_clear()
    parser.parse_expr_cached.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = ([json.loads(line) for line in open(args.pairs, encoding="utf-8") if line.strip()] if args.pairs
             else generated(args.n, args.seed))
    direct("1", "1")  # warm both up (sympy's first parse imports a lot)
    judge_math("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}")
    times = {"barkit": [], "math_verify": []}
    agree, right = Counter(), Counter()
    disagreements = Counter()
    for p in pairs:
        clear_caches()
        t0 = time.perf_counter()
        ours = judge_math(p["completion"], p["gold"]).reward == 1.0
        t1 = time.perf_counter()
        clear_caches()
        t1 = time.perf_counter()
        theirs = direct(p["gold"], p["completion"])
        t2 = time.perf_counter()
        times["barkit"].append(t1 - t0)
        times["math_verify"].append(t2 - t1)
        agree[ours == theirs] += 1
        if ours != theirs:
            disagreements[(p.get("kind", "-"), f"barkit {int(ours)} / math-verify {int(theirs)}")] += 1
        if "truth" in p:
            right["barkit"] += ours == p["truth"]
            right["math_verify"] += theirs == p["truth"]
    n = len(pairs)
    print(f"{n} pairs: barkit and math_verify.verify agree on {agree[True]} ({100 * agree[True] / n:.1f}%)")
    known = sum("truth" in p for p in pairs)
    if known:
        print(f"right against the truth ({known} pairs): barkit {right['barkit']} "
              f"({100 * right['barkit'] / known:.1f}%), math-verify direct {right['math_verify']} "
              f"({100 * right['math_verify'] / known:.1f}%)")
    for (kind, what), count in sorted(disagreements.items()):
        print(f"  disagree: {kind:9s} {what}: {count}")
    mb, mm = statistics.median(times["barkit"]), statistics.median(times["math_verify"])
    print(f"median time per item: barkit {1000 * mb:.2f} ms, math-verify {1000 * mm:.2f} ms "
          f"(ratio {mb / mm:.2f}); mean {1000 * statistics.mean(times['barkit']):.2f} / "
          f"{1000 * statistics.mean(times['math_verify']):.2f} ms")


if __name__ == "__main__":
    main()
