"""barkit merge next to mergekit on the same bf16 merges: values, time and peak anonymous memory.

    python benchmarks/bench_merge_mergekit.py --mergekit /path/to/venv/bin/mergekit-yaml [--layers 12]

mergekit is not a barkit dependency: install it in its own environment (`python -m venv mk && mk/bin/pip install
torch==2.13.0 mergekit`) and pass its `mergekit-yaml`. Writes a random bf16 Olmo-2-shaped pretrained model and
four fine-tuned ones (~305M parameters each at the default 12 layers), then runs, on both tools:

- task arithmetic with weights 0.4 / 0.3 / 0.2 / 0.1;
- TIES (density 0.3, the same unequal weights) with barkit's mergekit-compatible options
  (`--trim-rounding floor --ties-divisor weight_sum`).

For each it prints wall and CPU time, peak anonymous memory (polled RssAnon: memory the process allocated,
not the page cache of the memory-mapped inputs) above an import-only process, in units of the largest tensor
in fp32 (the few-tensor bound: a streaming merge needs a handful of them), and how the outputs compare with an
fp64 reference computed here from mergekit's formulas: the share of entries equal to the correctly rounded
reference, and the largest difference. DARE draws random masks, which no two tools share; its arithmetic is
checked against hand-computed references in tests/test_merge.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _random_ckpt import (  # noqa: E402
    barkit_cmd,
    fmt,
    import_baseline_mb,
    largest_tensor_bytes,
    measure,
    remove,
    write_random_checkpoint,
)

from barkit.checkpoint import CheckpointReader  # noqa: E402

WEIGHTS = [0.4, 0.3, 0.2, 0.1]
DENSITY = 0.3


def mergekit_config(method: str, pretrained: Path, models: list[Path]) -> str:
    lines = [f"merge_method: {method}", f"base_model: {pretrained}", "dtype: bfloat16", "models:"]
    for path, weight in zip(models, WEIGHTS):
        params = f"weight: {weight}" + (f", density: {DENSITY}" if method == "ties" else "")
        lines.append(f"  - model: {path}\n    parameters: {{{params}}}")
    return "\n".join(lines) + "\n"


def reference(method: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """fp64 result of the merge's formula (mergekit's semantics for TIES: floor trim, weight-sum divisor)."""
    deltas = [(t.double() - base).flatten() for t in tensors]
    if method == "task_arithmetic":
        return base + sum(w * d for w, d in zip(WEIGHTS, deltas)).view(base.shape)
    weighted = []
    for d, w in zip(deltas, WEIGHTS):
        keep = torch.zeros_like(d)
        keep[torch.argsort(d.abs(), descending=True, stable=True)[:int(DENSITY * d.numel())]] = 1
        weighted.append(d * keep * w)
    stacked = torch.stack(weighted)
    mask = (torch.sign(stacked) == torch.where(stacked.sum(0) >= 0, 1.0, -1.0)).double()
    divisor = (torch.tensor(WEIGHTS, dtype=torch.float64)[:, None] * mask).sum(0)
    divisor[divisor == 0] = 1
    return base + ((stacked * mask).sum(0) / divisor).view(base.shape)


def agreement(method: str, out: Path, pretrained: Path, models: list[Path]) -> tuple[float, float]:
    """(share of entries equal to the correctly rounded fp64 reference, largest |difference|)."""
    merged, base, inputs = CheckpointReader(out), CheckpointReader(pretrained), [CheckpointReader(m) for m in models]
    equal = total = 0
    worst = 0.0
    for key in base.keys():
        ref = reference(method, base.get(key).double(), [r.get(key) for r in inputs])
        got = merged.get(key)
        equal += (got == ref.to(got.dtype)).sum().item()
        total += got.numel()
        worst = max(worst, (got.double() - ref).abs().max().item())
    return equal / total, worst


def run(workdir: Path, mergekit: str, layers: int) -> None:
    shape = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=layers, num_attention_heads=16,
                 num_key_value_heads=16)
    print("writing random pretrained and fine-tuned checkpoints ...", flush=True)
    pretrained = write_random_checkpoint(workdir / "pretrained", seed=1, **shape)
    models = [write_random_checkpoint(workdir / f"ft{i}", seed=10 + i, **shape) for i in range(len(WEIGHTS))]
    reader = CheckpointReader(pretrained)
    params = sum(reader.nbytes(k) for k in reader.keys()) // 2
    largest_fp32 = largest_tensor_bytes(pretrained) * 2 / 2**20  # bf16 on disk, fp32 while merging
    baseline = import_baseline_mb()
    print(f"{len(models)} models of {params / 1e6:.0f}M parameters (bf16); largest tensor {largest_fp32:.0f} MiB in "
          f"fp32; import-only process {baseline:.0f} MB")
    for method in ("task_arithmetic", "ties"):
        spec = ",".join(f"m{i}={path}:{w}" for i, (path, w) in enumerate(zip(models, WEIGHTS)))
        options = ["--density", str(DENSITY), "--trim-rounding", "floor", "--ties-divisor", "weight_sum"] \
            if method == "ties" else []
        ours, theirs = workdir / "barkit-out", workdir / "mergekit-out"
        config = workdir / f"{method}.yaml"
        config.write_text(mergekit_config(method, pretrained, models))
        results = {
            "barkit": measure(barkit_cmd("merge", "--method", method, "--general", str(pretrained), "--pretrained",
                                         str(pretrained), "--models", spec, "--out", str(ours), "--verify", "keys",
                                         *options)),
            "mergekit": measure([mergekit, str(config), str(theirs), "--no-copy-tokenizer",
                                 "--out-shard-size", "1B"]),
        }
        print(f"\n[{method}, {len(models)} models, weights {WEIGHTS}]")
        for tool, out in (("barkit", ours), ("mergekit", theirs)):
            r = results[tool]
            share, worst = agreement(method, out, pretrained, models)
            print(f"  {tool:8s} {fmt(r)}  peak anonymous {r['peak_anon_mb']:.0f} MB = "
                  f"{(r['peak_anon_mb'] - baseline) / largest_fp32:.1f} largest fp32 tensors above the import "
                  f"baseline; {100 * share:.2f}% of entries equal to the correctly rounded fp64 result "
                  f"(largest difference {worst:.2e})")
        ratio = results["barkit"]["peak_anon_mb"] / results["mergekit"]["peak_anon_mb"]
        print(f"  peak anonymous memory barkit / mergekit: {ratio:.2f}")
        remove(ours)
        remove(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit", required=True, help="mergekit-yaml executable (from its own environment)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/barkit-bench-mergekit"))
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    if shutil.which(args.mergekit) is None:
        sys.exit(f"{args.mergekit}: not found (install mergekit in its own environment)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args.workdir, args.mergekit, args.layers)
    except subprocess.CalledProcessError as exc:
        sys.exit(f"{exc.cmd[0]} failed: {exc}")
    finally:
        remove(args.workdir)


if __name__ == "__main__":
    main()
