"""Benchmark `barkit merge` of N random ~1.28B-parameter bf16 Olmo 2 checkpoints: time and peak RSS.

    python benchmarks/bench_merge.py [--workdir /tmp/barkit-bench-merge] [--methods task_arithmetic,ties]

General, pretrained and one fine-tuned model are streamed to disk at random; further models are hard links of
the fine-tuned one (merge reads and computes the same whatever the values). For N = 2 and 4 models it prints
wall/CPU time (with `cp -r` of one checkpoint for scale) and peak RSS relative to the largest tensor: linear
methods keep one task vector alive at a time (memory independent of N), TIES holds N per tensor.
Takes ~5 minutes and ~15 GB of disk with the default task_arithmetic; `--methods task_arithmetic,ties` adds
~15 minutes on 2 cores (TIES's exact top-k trim runs a kthvalue over every task vector).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _random_ckpt import (  # noqa: E402
    barkit_cmd,
    cp_cmd,
    dir_bytes,
    fmt,
    hardlink_copy,
    import_baseline_mb,
    largest_tensor_bytes,
    measure,
    remove,
    write_random_checkpoint,
)


def run(workdir: Path, methods: list[str], counts: list[int], shard: str) -> None:
    free = shutil.disk_usage(workdir).free
    if free < 15e9:
        sys.exit(f"need ~15 GB free under {workdir}, found {free / 1e9:.1f} GB")
    print("writing random general, pretrained and fine-tuned checkpoints ...", flush=True)
    general, pretrained, tuned = (write_random_checkpoint(workdir / name, seed=seed)
                                  for name, seed in (("general", 0), ("pretrained", 1), ("tuned", 2)))
    models = [tuned] + [hardlink_copy(tuned, workdir / f"tuned{i}") for i in range(2, max(counts) + 1)]
    largest = largest_tensor_bytes(general) / 2**20
    baseline = import_baseline_mb()
    out, copy = workdir / "merged", workdir / "copy"
    cp_one = measure(cp_cmd(general, copy))
    remove(copy)
    cp_one = measure(cp_cmd(general, copy))
    remove(copy)
    print(f"model: {dir_bytes(general) / 1e9:.2f} GB bf16, largest tensor {largest:.0f} MiB; import-only "
          f"process peak RSS {baseline:.0f} MB\n  cp -r one checkpoint {fmt(cp_one)}")
    for method in methods:
        for n in counts:
            spec = ",".join(f"m{i}={path}:{1 / n:.3f}" for i, path in enumerate(models[:n], start=1))
            result = measure(barkit_cmd("merge", "--method", method, "--general", str(general), "--pretrained",
                                        str(pretrained), "--models", spec, "--out", str(out), "--verify", "keys",
                                        "--max-shard-size", shard))
            print(f"\n[{method}, N = {n} models, max_shard_size {shard}]")
            print(f"  merge           {fmt(result)}  ({result['wall_s'] / cp_one['wall_s']:.1f}x cp of one checkpoint)")
            print(f"  peak RSS: {result['maxrss_mb']:.0f} MB = {result['maxrss_mb'] / largest:.1f} largest tensors; "
                  f"peak anonymous {result['peak_anon_mb']:.0f} MB "
                  f"({(result['peak_anon_mb'] - baseline) / largest:.1f} tensors above the import baseline)")
            remove(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/barkit-bench-merge"))
    parser.add_argument("--methods", default="task_arithmetic")
    parser.add_argument("--counts", default="2,4", help="numbers of models to merge")
    parser.add_argument("--shard-size", default="1GB", help="output max_shard_size")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args.workdir, args.methods.split(","), [int(c) for c in args.counts.split(",")], args.shard_size)
    finally:
        if not args.keep:
            remove(args.workdir)


if __name__ == "__main__":
    main()
