"""Wall time of every demo phase on this machine, and router training cost as a share of expert training.

    python benchmarks/bench_demo.py --profile quick [--out runs/bench-demo]

Targets (2 CPU cores): quick <= 3 min, default <= 15 min; world build quick <= 60 s, default <= 5 min.
Budgets are in steps, so the same run is reproducible; seconds vary +/-30% on shared machines.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

from barkit.toy.demo import DemoConfig, run_demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick", choices=["quick", "default", "smoke"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", action="store_true", help="reuse an existing run directory")
    args = parser.parse_args()
    out = Path(args.out or f"runs/bench-demo-{args.profile}")
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    start = time.perf_counter()
    summary = run_demo(DemoConfig(out=str(out), profile=args.profile, progress=False), log=lambda s: None)
    wall = time.perf_counter() - start
    world = json.loads((out / "world" / "world_manifest.json").read_text())["phases"]
    steps = summary["step_seconds"]
    print(f"profile {args.profile}: total {wall:.0f} s")
    print("world build:", ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in world.items()),
          f"(total {sum(v['seconds'] for v in world.values()):.0f} s)")
    for name, sec in steps.items():
        print(f"  {name:32s} {sec:7.1f} s")
    experts = sum(v for k, v in steps.items() if k.startswith("experts/"))
    evals = sum(v for k, v in steps.items() if k.startswith("eval/"))
    router = steps.get("route", 0.0)
    workers = summary["expert_workers"]
    cores = workers["processes"] * workers["threads"]
    # cost in core-seconds: experts train in `processes` processes of `threads` threads, the router on all cores
    expert_cost, router_cost = experts * workers["threads"], router * cores
    print(f"expert training {summary['experts_wall_s']:.0f} s wall ({workers['processes']} processes x "
          f"{workers['threads']} threads; {expert_cost:.0f} core-s), router training {router:.0f} s "
          f"({router_cost:.0f} core-s = {100 * router_cost / max(expert_cost, 1e-9):.1f}% of expert training), "
          f"evaluation {summary['evals_wall_s']:.0f} s wall ({evals:.0f} s summed over the models)")
    print(summary["table"])


if __name__ == "__main__":
    main()
