"""barkit merge next to mergekit on the same bf16 merges: values, time and peak anonymous memory.

    python benchmarks/bench_merge_mergekit.py --mergekit /path/to/venv/bin/mergekit-yaml [--layers 12]

mergekit is not a barkit dependency: install it in its own environment (`python -m venv mk && mk/bin/pip install
torch==2.13.0 mergekit`) and pass its `mergekit-yaml`. Writes a random bf16 Olmo-2-shaped pretrained model and
four fine-tuned ones (~305M parameters each at the default 12 layers), then runs, on both tools:

- task arithmetic with weights 0.4 / 0.3 / 0.2 / 0.1;
- TIES (density 0.3, the same unequal weights) with barkit's mergekit-compatible options
  (`--trim-rounding floor --ties-divisor weight_sum`), in bf16 arithmetic on both sides (`--compute-dtype input`,
  mergekit's `dtype: bfloat16`) and in fp32 (barkit's default `wide`; mergekit `dtype: float32`,
  `out_dtype: bfloat16`);
- TIES with per-model densities (0.5 / 0.3 / 0.2 / 0.05, `--densities`) and at density 0.0005, where the
  smallest tensors keep max(1, int(density x n)) entries (mergekit 0.1.5's rule).

For each it prints wall and CPU time, peak anonymous memory (polled RssAnon: memory the process allocated,
not the page cache of the memory-mapped inputs) above an import-only process, in units of the largest tensor
in fp32 (the few-tensor bound: a streaming merge needs a handful of them), and the share of output entries on
which barkit and mergekit agree bit for bit, with the largest difference. DARE draws random masks, which no two
tools share; its arithmetic is checked against hand-computed references in tests/test_merge.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

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
TIES = ["--trim-rounding", "floor", "--ties-divisor", "weight_sum"]
# name: (method, barkit options, mergekit per-model densities or None, mergekit dtype)
CASES = {
    "task arithmetic, bf16 arithmetic": ("task_arithmetic", ["--compute-dtype", "input"], None, "bfloat16"),
    "TIES 0.3, bf16 arithmetic": ("ties", [*TIES, "--density", "0.3", "--compute-dtype", "input"], [0.3] * 4,
                                  "bfloat16"),
    "TIES 0.3, fp32 arithmetic": ("ties", [*TIES, "--density", "0.3"], [0.3] * 4, "float32"),
    "TIES per-model densities": ("ties", [*TIES, "--densities", "m0=0.5,m1=0.3,m2=0.2,m3=0.05", "--compute-dtype",
                                          "input"], [0.5, 0.3, 0.2, 0.05], "bfloat16"),
    "TIES density 0.0005": ("ties", [*TIES, "--density", "0.0005", "--compute-dtype", "input"], [0.0005] * 4,
                            "bfloat16"),
}


def mergekit_config(method: str, pretrained: Path, models: list[Path], densities: list[float] | None,
                    dtype: str) -> str:
    lines = [f"merge_method: {method}", f"base_model: {pretrained}", f"dtype: {dtype}", "out_dtype: bfloat16",
             "models:"]
    for i, (path, weight) in enumerate(zip(models, WEIGHTS)):
        params = f"weight: {weight}" + (f", density: {densities[i]}" if densities else "")
        lines.append(f"  - model: {path}\n    parameters: {{{params}}}")
    return "\n".join(lines) + "\n"


def agreement(ours: Path, theirs: Path) -> tuple[float, float]:
    """(share of entries on which the two outputs are bit-identical, largest |difference|)."""
    a, b = CheckpointReader(ours), CheckpointReader(theirs)
    equal = total = 0
    worst = 0.0
    for key in a.keys():
        x, y = a.get(key), b.get(key)
        equal += (x == y).sum().item()
        total += x.numel()
        worst = max(worst, (x.double() - y.double()).abs().max().item())
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
    for name, (method, options, densities, dtype) in CASES.items():
        spec = ",".join(f"m{i}={path}:{w}" for i, (path, w) in enumerate(zip(models, WEIGHTS)))
        ours, theirs = workdir / "barkit-out", workdir / "mergekit-out"
        config = workdir / f"{method}.yaml"
        config.write_text(mergekit_config(method, pretrained, models, densities, dtype))
        results = {
            "barkit": measure(barkit_cmd("merge", "--method", method, "--general", str(pretrained), "--pretrained",
                                         str(pretrained), "--models", spec, "--out", str(ours), "--verify", "keys",
                                         *options)),
            "mergekit": measure([mergekit, str(config), str(theirs), "--no-copy-tokenizer",
                                 "--out-shard-size", "1B"]),
        }
        share, worst = agreement(ours, theirs)
        print(f"\n[{name}, {len(models)} models, weights {WEIGHTS}]: barkit and mergekit equal on "
              f"{100 * share:.4f}% of entries (largest difference {worst:.2e})")
        for tool in ("barkit", "mergekit"):
            r = results[tool]
            print(f"  {tool:8s} {fmt(r)}  peak anonymous {r['peak_anon_mb']:.0f} MB = "
                  f"{(r['peak_anon_mb'] - baseline) / largest_fp32:.1f} largest fp32 tensors above the import "
                  f"baseline")
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
