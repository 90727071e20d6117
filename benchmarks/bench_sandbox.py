"""Per-program overhead of the sandbox: a trivial program in `run_python` vs. a bare subprocess.

Usage: python benchmarks/bench_sandbox.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from barkit.eval.sandbox import run_many, run_python, sandbox_protections


def _mean_s(fn, runs: int) -> float:
    fn()  # warm-up (first call also probes the isolation mode)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(f"protections: {sandbox_protections()}")
    bare = _mean_s(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.runs)
    sandboxed = _mean_s(lambda: run_python("pass"), args.runs)
    print(f"bare subprocess.run([python, -c, pass]): {bare * 1000:7.1f} ms/program")
    print(f"sandbox run_python('pass'):              {sandboxed * 1000:7.1f} ms/program")
    print(f"ratio sandbox / bare:                    {sandboxed / bare:7.2f}x")
    print(f"overhead per program (sandbox - bare):   {(sandboxed - bare) * 1000:7.1f} ms (target <= 50 ms)")
    start = time.perf_counter()
    run_many(["pass"] * args.runs, workers=2)
    print(f"run_many(workers=2) throughput:          {args.runs / (time.perf_counter() - start):7.1f} programs/s")


if __name__ == "__main__":
    main()
