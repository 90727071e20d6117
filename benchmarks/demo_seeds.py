"""The demo's BAR table over several seeds, with means and spreads: the command behind the README's and
docs/results.md's tables.

    python benchmarks/demo_seeds.py --profile default --seeds 0 1 2 [--out runs/seeds] [--markdown FILE]

Each seed is a whole demo run from scratch (its own world, base, anchor, experts and router). The table gives,
per model and category, the mean over seeds and the spread (min-max) across them, and, per seed, the table
with one standard error over the evaluation items. It says which machine (CPU model, cores), commit and
package versions produced it. Runs are deterministic on one machine (training uses torch's deterministic
algorithms), so the same command twice gives the same table; another machine's CPU kernels round
differently and training amplifies that, which is what the seeds' spread is there to show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from barkit import kernels

kernels.pin()  # before torch: the same table on any AVX2 machine of one CPU vendor (barkit/kernels.py)

import torch  # noqa: E402
import transformers  # noqa: E402

from barkit.eval.scoring import CATEGORIES, SHORT_NAMES  # noqa: E402
from barkit.toy.demo import DemoConfig, run_demo  # noqa: E402


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown CPU") if os.path.exists("/proc/cpuinfo") else platform.processor()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return (f"{cpu}, {cores} cores; barkit commit {commit or 'unknown'}; torch {torch.__version__}, "
            f"transformers {transformers.__version__}; {kernels.describe()}")


def table(runs: dict[int, dict]) -> str:
    """Mean over seeds with the min-max spread, per model and category."""
    first = next(iter(runs.values()))["scores"]
    cats = ["overall", *[c for c in CATEGORIES if c in next(iter(first.values()))]]
    header = ["Model", *[("Overall" if c == "overall" else SHORT_NAMES[c]) for c in cats]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for model in first:
        cells = [model]
        for cat in cats:
            values = [run["scores"][model][cat] for run in runs.values() if run["scores"][model].get(cat) is not None]
            mean = sum(values) / len(values)
            cells.append(f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else f"{mean:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=["quick", "default", "smoke"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args()
    runs, seconds = {}, {}
    for seed in args.seeds:
        start = time.perf_counter()
        runs[seed] = run_demo(DemoConfig(out=str(args.out / f"{args.profile}-seed{seed}"), profile=args.profile,
                                         seed=seed, progress=False), log=lambda s: None)
        seconds[seed] = time.perf_counter() - start
        print(f"seed {seed}: {seconds[seed] / 60:.1f} min", flush=True)
    report = [f"`barkit demo --profile {args.profile}`, seeds {', '.join(map(str, args.seeds))}: mean over seeds "
              f"(min-max across them).", f"Machine: {machine()}.", "", table(runs)]
    for seed, run in runs.items():
        report += [f"Seed {seed} ({seconds[seed] / 60:.1f} min; one standard error over the items):", "",
                   run["table"]]
    text = "\n".join(report)
    print(text)
    (args.out / f"{args.profile}-seeds.json").write_text(json.dumps({s: r["scores"] for s, r in runs.items()},
                                                                    indent=2))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
