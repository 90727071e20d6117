"""Overhead of the sandbox, measured side by side with a bare interpreter in one run: per program (`run_python`
against `python -c`) and per code verdict (the completion and its tests in two sandboxes joined by pipes,
against the same completion and tests in one bare `python -c`, as an unsandboxed harness would run them).

Usage: python benchmarks/bench_sandbox.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from barkit.eval.code_verdict import verdict
from barkit.eval.sandbox import run_many, run_python, sandbox_protections

COMPLETION = "def add(a, b):\n    return a + b\n"
STEPS = ["assert candidate(1, 2) == 3", "assert candidate(-1, 1) == 0", "assert candidate(10, 5) == 15"]


def _times(fn, runs: int) -> list[float]:
    fn()  # warm-up (the first call also verifies the isolation)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _bare_verdict() -> None:
    tests = "\n".join(["candidate = add", *STEPS])
    subprocess.run([sys.executable, "-c", COMPLETION + tests], check=True)


def _sandboxed_verdict() -> None:
    assert verdict(COMPLETION, "", "", "candidate", STEPS, "add").all_passed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(f"protections: {sandbox_protections()}")
    pairs = {
        "per program": (lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
                        lambda: run_python("pass")),
        "per code verdict": (_bare_verdict, _sandboxed_verdict),
    }
    print(f"\n{args.runs} runs each, ms | bare median | sandbox median | overhead median | bare mean | sandbox mean "
          f"| overhead mean | ratio (means)")
    print("|---|---|---|---|---|---|---|---|")
    for name, (bare_fn, sandbox_fn) in pairs.items():
        bare, boxed = [], []
        for _ in range(args.runs):  # interleaved, so a noisy moment hits both sides
            bare += _times(bare_fn, 1)
            boxed += _times(sandbox_fn, 1)
        b_med, s_med = statistics.median(bare) * 1e3, statistics.median(boxed) * 1e3
        b_mean, s_mean = statistics.fmean(bare) * 1e3, statistics.fmean(boxed) * 1e3
        print(f"| {name} | {b_med:.1f} | {s_med:.1f} | {s_med - b_med:.1f} | {b_mean:.1f} | {s_mean:.1f} | "
              f"{s_mean - b_mean:.1f} | {s_mean / b_mean:.2f}x |")
    print("\ntarget: overhead per program <= 50 ms on a quiet machine")
    start = time.perf_counter()
    run_many(["pass"] * args.runs, workers=2)
    print(f"run_many(workers=2) throughput: {args.runs / (time.perf_counter() - start):.1f} programs/s")


if __name__ == "__main__":
    main()
