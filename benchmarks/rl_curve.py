"""Does GRPO raise the verified reward on held-out prompts? The math expert's RL curve on the toy world.

The demo's math SFT (800 steps) leaves almost nothing for RL (held-out greedy reward ~0.87, training
reward ~0.96: most GRPO groups agree, so they carry no gradient). This script shortens math SFT to leave
room, then runs the recipe's RL stage from it with and without DAPO's dynamic sampling (and with the shared
tensors at the full lr, as BAR's 7B recipe trains them), side by side, and
reports the greedy reward on held-out prompts every few steps: by default RL prompts split off before
training (the training distribution, unseen problems), or with `--heldout-from eval` the math eval items
(templates and entities never trained on: transfer, not just generalisation).

    python benchmarks/rl_curve.py --demo runs/demo [--sft-steps 150] [--rl-steps 80] [--lr 2e-4]
    python benchmarks/rl_curve.py --demo runs/demo --variants dynamic --seeds 0,1,2 --rl-steps 160
    .venv-vllm/bin/python benchmarks/rl_curve.py --demo DEMO --profile default --variants grpo,vllm --seeds 0,1,2

`vllm` is plain GRPO with rollouts on a vLLM engine (rl.engine vllm; run it in the vllm venv, on a `default`
profile demo: the quick profile's attention heads are narrower than vLLM's CPU kernels take).

Needs a demo directory whose world and math midtrain checkpoint exist (`barkit demo`). Writes
`<out>/rl_curve.png` and `<out>/rl_curve.json`; ~8 minutes on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from barkit.toy.recipe import get_recipe
from barkit.toy.run import heldout_rl_prompts, stage_config
from barkit.train import train
from barkit.train.metrics import read_metrics


def held_out_curve(rows: list[dict], key: str = "eval_reward") -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in rows if r.get(key) is not None]


def rise(points: list[tuple[int, float]], late_from: int) -> tuple[float, float]:
    """(reward at the first evaluation, mean reward over evaluations at steps >= late_from).

    >>> rise([(0, 0.2), (10, 0.3), (20, 0.4), (30, 0.6)], 20)
    (0.2, 0.5)
    """
    late = [r for s, r in points if s >= late_from]
    return points[0][1], sum(late) / len(late)


def train_reward(rows: list[dict], first: bool, n: int = 10) -> float:
    """Mean sampled (training) reward over the first or last n steps."""
    rewards = [r["reward"] for r in rows if "reward" in r]
    window = rewards[:n] if first else rewards[-n:]
    return sum(window) / len(window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", required=True, help="a demo directory (its world and math midtrain are reused)")
    parser.add_argument("--out", default=None, help="default: DEMO/rl_curve")
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--rl-steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--heldout", type=int, default=128, help="held-out prompts")
    parser.add_argument("--eval-samples", type=int, default=4,
                        help="samples per held-out prompt for the sampled reward (0: greedy only)")
    parser.add_argument("--heldout-from", choices=["rl", "eval"], default="rl",
                        help="rl: split off the RL prompt file; eval: the math eval items")
    parser.add_argument("--seeds", default="0", help="RL seeds (comma-separated); the SFT start is shared")
    parser.add_argument("--variants", default="grpo,dynamic,shared1",
                        help="comma-separated: grpo, dynamic (DAPO dynamic sampling), shared1 (+ shared lr x1)")
    parser.add_argument("--late-fraction", type=float, default=0.4,
                        help="the rise is measured from step 0 to the mean over this last share of the run")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs in OUT instead of retraining")
    parser.add_argument("--profile", default="default", help="the demo's profile (its recipe's budgets)")
    args = parser.parse_args()

    recipe, demo = get_recipe(args.profile), Path(args.demo)
    world, out = demo / "world", Path(args.out or demo / "rl_curve")
    data = world / "data"
    out.mkdir(parents=True, exist_ok=True)
    rl_data = data / "math_rl.jsonl"
    if args.heldout_from == "eval":
        heldout = heldout_rl_prompts(world, "math", out / "heldout_math.jsonl", limit=args.heldout)
    else:  # the file's last rows are held out; RL trains on the rest
        rows = rl_data.read_text().splitlines(keepends=True)
        heldout, rl_data = out / "heldout_math_rl.jsonl", out / "math_rl_train.jsonl"
        heldout.write_text("".join(rows[-args.heldout:]))
        rl_data.write_text("".join(rows[:-args.heldout]))
    sft = stage_config(recipe, "sft", "math", demo / "experts/math/midtrain", data / "math_sft.jsonl",
                        out / "sft", 0, False, data / "general_sft.jsonl")
    sft = dataclasses.replace(sft, steps=args.sft_steps, overwrite=False)
    if not (out / "sft" / "barkit_manifest.json").exists():
        train(sft)
    curves, sampled, train_rewards = {}, {}, {}
    runs_of: dict[str, list[str]] = {}  # variant key -> its runs' labels (one per seed)
    shared = recipe.shared_lr_scale
    variants = {"grpo": ("GRPO", False, shared, "hf"), "dynamic": ("GRPO + dynamic sampling", True, shared, "hf"),
                "shared1": (f"GRPO + dynamic sampling, shared lr x1 (recipe: x{shared:g})", True, 1.0, "hf"),
                "vllm": ("GRPO on vLLM", False, shared, "vllm")}
    seeds = [int(x) for x in args.seeds.split(",")]
    for key in args.variants.split(","):
        base_label, dynamic, scale, engine = variants[key]
        for seed in seeds:
            label = base_label if len(seeds) == 1 else f"{base_label}, seed {seed}"
            runs_of.setdefault(key, []).append(label)
            name = f"rl-{key}" + (f"-seed{seed}" if len(seeds) > 1 else "")
            cfg = stage_config(recipe, "rl", "math", out / "sft", rl_data, out / name, seed, False,
                                data / "general_sft.jsonl", heldout)
            rl = dataclasses.replace(cfg.rl, dynamic_sampling=dynamic, eval_every=args.eval_every,
                                     eval_max_prompts=args.heldout, eval_samples=args.eval_samples, engine=engine)
            cfg = dataclasses.replace(cfg, steps=args.rl_steps, rl=rl, overwrite=True,
                                      optim=dataclasses.replace(cfg.optim, lr=args.lr, shared_lr_scale=scale),
                                      checkpoint=dataclasses.replace(cfg.checkpoint, resume=False))
            if not (Path(cfg.out) / "barkit_manifest.json").exists() or not args.reuse:
                train(cfg)
            rows = read_metrics(Path(cfg.out) / "metrics.jsonl")
            curves[label] = held_out_curve(rows)
            sampled[label] = held_out_curve(rows, "eval_reward_sampled")
            train_rewards[label] = (train_reward(rows, True), train_reward(rows, False))

    print(f"\nmath: SFT {args.sft_steps} steps, then RL {args.rl_steps} steps at lr {args.lr:g}; "
          f"reward on {args.heldout} held-out prompts ({args.heldout_from})")
    steps = [s for s, _ in next(iter(curves.values()))]
    print("greedy / sampled (mean of " + str(args.eval_samples) + " samples at the training temperature)")
    print("| step | " + " | ".join(curves) + " |\n|---|" + "---|" * len(curves))
    for i, step in enumerate(steps):
        cells = [f"{curves[k][i][1]:.3f}" + (f" / {sampled[k][i][1]:.3f}" if i < len(sampled[k]) else "")
                 if i < len(curves[k]) else "" for k in curves]
        print(f"| {step} | " + " | ".join(cells) + " |")
    for label, (start, end) in train_rewards.items():
        print(f"{label}: sampled training reward {start:.3f} (first 10 steps) -> {end:.3f} (last 10)")
    late_from = int(args.rl_steps * (1 - args.late_fraction))
    gains = {label: rise(points, late_from) for label, points in (sampled if args.eval_samples else curves).items()}
    print(f"\nheld-out {'sampled' if args.eval_samples else 'greedy'} reward, step 0 -> mean over steps "
          f">= {late_from}:")
    for label, (start, late) in gains.items():
        print(f"  {label}: {start:.3f} -> {late:.3f} ({late - start:+.3f})")
    if len(seeds) > 1:
        for key, labels in runs_of.items():
            deltas = [gains[label][1] - gains[label][0] for label in labels]
            mean = sum(deltas) / len(deltas)
            se = (sum((d - mean) ** 2 for d in deltas) / (len(deltas) - 1) / len(deltas)) ** 0.5
            print(f"  {variants[key][0]}: mean rise over {len(deltas)} seeds {mean:+.3f} (SE {se:.3f}; "
                  f"{sum(d > 0 for d in deltas)}/{len(deltas)} seeds positive)")
    (out / "rl_curve.json").write_text(json.dumps({"args": vars(args), "curves": curves, "sampled": sampled,
                                                   "train_reward_first_last10": train_rewards,
                                                   "rise": gains}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, (title, series) in zip(axes, (("greedy", curves), (f"sampled (x{args.eval_samples})", sampled))):
        for label, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
        ax.set(xlabel="RL step", ylabel="held-out reward", title=f"math, held-out reward: {title}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rl_curve.png", dpi=100)
    print(f"wrote {out / 'rl_curve.png'}, {out / 'rl_curve.json'}")


if __name__ == "__main__":
    main()
