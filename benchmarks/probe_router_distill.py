"""Probe: train a composed MoE's router by distillation instead of the LM loss (a router variant in docs/results.md).

Every chat of the router sample gets as targets the full next-token distributions of its stratum's teacher
(the dense anchor for general chats, the domain's 2x model for that domain's chats), so the router sees a
whole distribution per token instead of one label. Everything else is `barkit route` as the demo runs it
(same sample, steps, lr, schedule; only router weights train). It is the `distill` objective
(`barkit.train.objectives.distill`) with one teacher per data file; the same run from the command line:

    barkit route runs/demo/bar-moe-composed --objective distill --data G M C T S \\
        --objective-args '{teachers: [ANCHOR, MATH, CODE, TOOL, SAFETY]}' --out runs/diag/distill ...

It scored the same as the LM loss (72.9 against 72.7; math 67.2, tool 67.2), which places the routing gap in
the router's capacity, not its signal.

    python benchmarks/probe_router_distill.py --demo runs/demo --out runs/diag/distill  # ~2.5 min + eval
    barkit eval runs/diag/distill --world runs/demo/world --out runs/diag/distill/eval
"""

from __future__ import annotations

import argparse

from barkit.route import RouteConfig, train_router
from barkit.toy.recipe import get_recipe
from barkit.train import MixtureConfig, OptimConfig, SequenceConfig

DOMAINS = {"math": "rl", "code": "rl", "tool_use": "sft", "safety": "sft"}  # the demo's final stage per domain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="a finished `barkit demo --profile default` directory")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    world = f"{args.demo}/world"
    teachers = [f"{world}/anchor"] + [f"{args.demo}/experts/{d}/{stage}" for d, stage in DOMAINS.items()]
    recipe = get_recipe("default")
    data = [f"{world}/data/general_sft.jsonl"] + [f"{world}/data/{d}_sft.jsonl" for d in DOMAINS]
    train_router(RouteConfig(model=f"{args.demo}/bar-moe-composed", data=data, out=args.out, objective="distill",
                             objective_args={"teachers": teachers},
                             mixture=MixtureConfig(sample_fraction=recipe.router_fraction), steps=recipe.router.steps,
                             optim=OptimConfig(lr=recipe.router.lr), batch_size=recipe.router.batch_size,
                             sequences=SequenceConfig(seq_len=recipe.seq_len), overwrite=True))


if __name__ == "__main__":
    main()
