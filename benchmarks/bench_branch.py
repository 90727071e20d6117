"""Benchmark `barkit branch` on a random ~1.28B-parameter bf16 Olmo 2 model against `cp -r` of the same bytes.

    python benchmarks/bench_branch.py [--workdir /tmp/barkit-bench-branch] [--repeats 2]

Prints wall and CPU time relative to copying a directory of the bytes branch writes, with `cp -r` (an in-kernel
copy_file_range) and with `dd` (userspace read/write, as barkit must); runs rotate which goes first. Then peak
RSS relative to the largest single tensor for several output shard sizes (`ShardedWriter` buffers one shard of
computed tensors in memory; branch copies everything but the routers in the kernel). Takes ~6 minutes on an idle
2-core machine and ~15 GB of disk.

Last measured (2026-11-30, 2 cores, load ~1.1): branch 5.7 / 9.1 / 7.7 s against cp 4.3 / 3.9 / 5.4 s, i.e.
1.34x / 2.34x / 1.43x cp; peak anonymous RSS 147 MB at 200MB and 1GB shards (the import of torch is most of it).
Before kernel copies and deferred output hashing: 2.7-3.5x cp and 586 MB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _random_ckpt import (  # noqa: E402
    barkit_cmd,
    dir_bytes,
    import_baseline_mb,
    largest_tensor_bytes,
    measure,
    remove,
    report_pairs,
    rss_line,
    timed_pairs,
    write_random_checkpoint,
)


def run(workdir: Path, repeats: int, timed_shard: str, rss_shards: list[str]) -> None:
    free = shutil.disk_usage(workdir).free
    if free < 20e9:
        sys.exit(f"need ~20 GB free under {workdir}, found {free / 1e9:.1f} GB")
    anchor, base, out = workdir / "anchor", workdir / "base", workdir / "moe"
    print("writing random anchor and base checkpoints ...", flush=True)
    write_random_checkpoint(anchor, seed=0)
    write_random_checkpoint(base, seed=1)
    largest = largest_tensor_bytes(anchor) / 2**20
    baseline = import_baseline_mb()
    print(f"model: {dir_bytes(anchor) / 1e9:.2f} GB bf16 dense (x2: anchor and base), largest tensor "
          f"{largest:.0f} MiB")

    def tool(shard: str) -> list[str]:
        return barkit_cmd("branch", str(anchor), "--base", str(base), "--out", str(out), "--verify", "keys",
                          "--max-shard-size", shard)

    pairs = timed_pairs(tool(timed_shard), out, repeats)
    print(f"\n[branch -> 2-expert MoE ({pairs[0]['tool']['bytes'] / 1e9:.2f} GB), max_shard_size {timed_shard}]")
    report_pairs("branch", pairs)
    print(f"  {rss_line(pairs[0]['tool'], largest, baseline)}")
    for shard in rss_shards:
        result = measure(tool(shard))
        remove(out)
        print(f"[max_shard_size {shard}] {result['wall_s']:.1f} s; {rss_line(result, largest, baseline)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/barkit-bench-branch"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timed-shard-size", default="200MB")
    parser.add_argument("--rss-shard-sizes", default="5GB,1GB", help="extra runs for peak RSS only")
    parser.add_argument("--keep", action="store_true", help="keep the random checkpoints afterwards")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args.workdir, args.repeats, args.timed_shard_size, args.rss_shard_sizes.split(","))
    finally:
        if not args.keep:
            remove(args.workdir)


if __name__ == "__main__":
    main()
