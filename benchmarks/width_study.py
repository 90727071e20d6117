"""Width study: does the routed MoE's gap to its experts close as the toy model gets wider? (docs/results.md)

The quick recipe (same data, step budgets and learning rates) at several hidden sizes, the FFN scaled with
the width, several seeds each. Per run: each 2x expert's gain over the anchor on its own category, the routed
MoE's gap to each expert on that category and to the anchor on the general categories, the best linear
router's leak (the weight the closest bias-free linear router leaves on experts the oracle gives none; see
probe_router_oracle.py), and the wall time. It prints one table (mean over seeds, min-max spread) and writes
a PNG of the routed gap and the leak against width.

    python benchmarks/width_study.py --widths 96 192 384 --seeds 1 2 --out runs/width \\
        --plot docs/img/width_study.png --markdown runs/width/width.md   # ~1.5 h on 2 cores

Each (width, seed) is a whole demo run from scratch in OUT/w{width}-seed{seed}; a run that finished is read
back from OUT/width.json, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from barkit import kernels

kernels.pin()  # before torch: the same table on any AVX2 machine of one CPU vendor (barkit/kernels.py)

import torch  # noqa: E402
from probe_router_oracle import fit_router, oracle_gates  # noqa: E402  (benchmarks/ is on sys.path as a script)
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from barkit.select import load_selected  # noqa: E402
from barkit.toy import recipe as recipes  # noqa: E402
from barkit.toy.demo import DemoConfig, run_demo  # noqa: E402
from barkit.toy.run import DOMAIN_CATEGORY, MODEL_LABELS  # noqa: E402
from barkit.train.data import tokenize_chats  # noqa: E402

GENERAL = ("knowledge", "reasoning", "chat")


def widened(width: int) -> str:
    """Register the quick recipe at `width` (FFN scaled alike, to a multiple of 32: grouped_mm needs 16-byte
    strides; head count kept) and return its profile name."""
    quick = recipes.RECIPES["quick"]
    scale = width / quick.shape.hidden
    ffn = 32 * round(quick.shape.intermediate * scale / 32)
    shape = dataclasses.replace(quick.shape, hidden=width, intermediate=ffn)
    name = f"quick-w{width}"
    recipes.RECIPES[name] = dataclasses.replace(quick, shape=shape, data_profile="quick")
    return name


def leak(run_dir: Path, rows: int) -> float:
    """Mean over layers of the weight the best bias-free linear router leaves off the oracle's experts."""
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "bar-moe")
    routed = AutoModelForCausalLM.from_pretrained(run_dir / "bar-moe", dtype=torch.float32)
    experts = routed.config.barkit_expert_names
    fits = []
    for domain in [None, *experts[1:]]:
        data = run_dir / "world" / "data" / f"{domain or 'general'}_sft.jsonl"
        examples = tokenize_chats(data, tokenizer, 128)[0][:rows]
        oracle = load_selected(run_dir / "bar-moe-composed", [domain] if domain else [])
        columns = [0] + ([experts.index(domain)] if domain else [])
        fits.append(oracle_gates(oracle, examples, tokenizer.pad_token_id, columns, len(experts)))
    per_layer = [fit_router(torch.cat([f[k][0] for f in fits]), torch.cat([f[k][1] for f in fits]), bias=False)["off"]
                 for k in range(len(fits[0]))]
    return sum(per_layer) / len(per_layer)


def measure(width: int, seed: int, out: Path, rows: int) -> dict:
    run_dir = out / f"w{width}-seed{seed}"
    start = time.perf_counter()
    summary = run_demo(DemoConfig(out=str(run_dir), profile=widened(width), seed=seed, progress=False),
                       log=lambda s: None)
    wall = time.perf_counter() - start
    torch.manual_seed(0)
    scores = summary["scores"]
    anchor, routed = scores[MODEL_LABELS["anchor"]], scores[MODEL_LABELS["moe"]]
    row = {"width": width, "seed": seed, "wall_min": wall / 60, "leak": leak(run_dir, rows)}
    for domain, cat in DOMAIN_CATEGORY.items():
        expert = scores[MODEL_LABELS[domain]][cat]
        row[f"gain_{domain}"] = expert - anchor[cat]
        row[f"gap_{domain}"] = routed[cat] - expert
    for cat in GENERAL:
        row[f"gap_{cat}"] = routed[cat] - anchor[cat]
    return row


def spread(values: list[float], fmt: str = "{:+.1f}") -> str:
    mean = statistics.fmean(values)
    return fmt.format(mean) + (f" ({fmt.format(min(values))}..{fmt.format(max(values))})" if len(values) > 1 else "")


def table(rows: list[dict]) -> str:
    keys = [*(f"gain_{d}" for d in DOMAIN_CATEGORY), *(f"gap_{d}" for d in DOMAIN_CATEGORY),
            *(f"gap_{c}" for c in GENERAL)]
    head = ["hidden / FFN", "seeds", *("2x gain " + k[5:] for k in keys[:4]),
            *("routed gap " + k[4:] for k in keys[4:]), "leak", "wall (min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for width in sorted({r["width"] for r in rows}):
        group = [r for r in rows if r["width"] == width]
        ffn = recipes.RECIPES[widened(width)].shape.intermediate
        cells = [f"{width} / {ffn}", ",".join(str(r["seed"]) for r in group),
                 *(spread([r[k] for r in group]) for k in keys),
                 spread([100 * r["leak"] for r in group], "{:.1f}%"), spread([r["wall_min"] for r in group], "{:.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    widths = sorted({r["width"] for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for domain in DOMAIN_CATEGORY:
        means = [statistics.fmean(r[f"gap_{domain}"] for r in rows if r["width"] == w) for w in widths]
        lows = [min(r[f"gap_{domain}"] for r in rows if r["width"] == w) for w in widths]
        highs = [max(r[f"gap_{domain}"] for r in rows if r["width"] == w) for w in widths]
        left.errorbar(widths, means, yerr=[[m - lo for m, lo in zip(means, lows)],
                                           [hi - m for m, hi in zip(means, highs)]], marker="o", capsize=3,
                      label=domain)
    left.axhline(0, color="grey", lw=0.8)
    left.set(xscale="log", xticks=widths, xticklabels=widths, xlabel="hidden size",
             ylabel="routed MoE - 2x expert (points)", title="Routed gap on each expert's category")
    left.legend()
    leaks = [[100 * r["leak"] for r in rows if r["width"] == w] for w in widths]
    means = [statistics.fmean(v) for v in leaks]
    right.errorbar(widths, means, yerr=[[m - min(v) for m, v in zip(means, leaks)],
                                        [max(v) - m for m, v in zip(means, leaks)]], marker="o", capsize=3)
    right.set(xscale="log", xticks=widths, xticklabels=widths, xlabel="hidden size",
              ylabel="weight off the oracle's experts (%)", title="Best linear router's leak", ylim=(0, None))
    for axis in (left, right):
        axis.xaxis.set_minor_locator(NullLocator())  # the widths alone, no log-scale minor labels
    fig.suptitle("Quick recipe at several widths: mean over seeds, bars min-max")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[96, 192, 384])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/width"))
    parser.add_argument("--rows", type=int, default=200, help="chats per data file for the leak probe")
    parser.add_argument("--plot", type=Path, help="write the PNG here (default: OUT/width_study.png)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "width.json"
    done = json.loads(store.read_text()) if store.exists() else []
    for width in args.widths:
        for seed in args.seeds:
            if not any(r["width"] == width and r["seed"] == seed for r in done):
                done.append(measure(width, seed, args.out, args.rows))
                store.write_text(json.dumps(done, indent=1))
            print(f"width {width} seed {seed} done", flush=True)
    rows = [r for r in done if r["width"] in args.widths and r["seed"] in args.seeds]
    text = table(rows)
    print(text + kernels.describe())
    plot(rows, args.plot or args.out / "width_study.png")
    if args.markdown:
        args.markdown.write_text(text + "\n" + kernels.describe() + "\n")


if __name__ == "__main__":
    main()
