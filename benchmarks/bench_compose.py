"""Benchmark `barkit compose` of 2 and 5 trained-expert checkpoints of a random ~1.28B-parameter bf16 Olmo 2.

    python benchmarks/bench_compose.py [--workdir /tmp/barkit-bench-compose] [--repeats 2]

The anchor and base are streamed to disk at random, branched once, and the domain checkpoints are hard links
of the branch output (identical files: compose does the same reads, checks, means and writes whatever the
values). Prints wall and CPU time relative to copying the same bytes with `cp -r` (in-kernel) and `dd`
(userspace), rotating which goes first, and peak RSS for 2 and 5 experts relative to the largest single
tensor, at two output shard sizes (`ShardedWriter` buffers one shard in memory). Takes ~17 minutes on an idle
2-core machine and ~35 GB of disk. Copy times on these VMs swing 3x between runs (page-cache writeback):
compare ratios within one run, over the repeats.
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
    dir_bytes,
    hardlink_copy,
    import_baseline_mb,
    largest_tensor_bytes,
    measure,
    remove,
    report_pairs,
    rss_line,
    timed_pairs,
    write_random_checkpoint,
)


def run(workdir: Path, repeats: int, counts: list[int], timed_shard: str, rss_shard: str) -> None:
    free = shutil.disk_usage(workdir).free
    if free < 35e9:
        sys.exit(f"need ~35 GB free under {workdir}, found {free / 1e9:.1f} GB")
    anchor, base, br, out = workdir / "anchor", workdir / "base", workdir / "branch", workdir / "moe"
    print("writing random anchor and base checkpoints, branching ...", flush=True)
    write_random_checkpoint(anchor, seed=0)
    write_random_checkpoint(base, seed=1)
    measure(barkit_cmd("branch", str(anchor), "--base", str(base), "--out", str(br), "--verify", "keys",
                       "--max-shard-size", "1GB"))
    remove(anchor, base)
    domains = [hardlink_copy(br, workdir / f"domain{i}") for i in range(1, max(counts) + 1)]
    largest = largest_tensor_bytes(br) / 2**20
    baseline = import_baseline_mb()
    print(f"input: {dir_bytes(br) / 1e9:.2f} GB 2-expert bf16 checkpoint, largest tensor {largest:.0f} MiB")
    subprocess.run(f"cat {br}/*.safetensors > /dev/null", shell=True, check=True)

    def tool(n: int, shard: str) -> list[str]:
        experts = ",".join(f"d{i}={d}" for i, d in enumerate(domains[:n], start=1))
        return barkit_cmd("compose", "--anchor", str(br), "--experts", experts, "--out", str(out),
                          "--verify", "keys", "--max-shard-size", shard)

    for n in counts:
        pairs = timed_pairs(tool(n, timed_shard), out, repeats)
        print(f"\n[{n} domains -> {n + 1}-expert MoE ({pairs[0]['tool']['bytes'] / 1e9:.2f} GB), "
              f"max_shard_size {timed_shard}]")
        report_pairs("compose", pairs)
        print(f"  {rss_line(pairs[0]['tool'], largest, baseline)}")
    print()
    for n in counts:
        result = measure(tool(n, rss_shard))
        remove(out)
        print(f"[{n} domains, max_shard_size {rss_shard}] {result['wall_s']:.1f} s; "
              f"{rss_line(result, largest, baseline)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/barkit-bench-compose"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--counts", default="2,5", help="numbers of domain experts to compose")
    parser.add_argument("--timed-shard-size", default="200MB")
    parser.add_argument("--rss-shard-size", default="200MB", help="extra runs for peak RSS only")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args.workdir, args.repeats, [int(c) for c in args.counts.split(",")], args.timed_shard_size,
            args.rss_shard_size)
    finally:
        if not args.keep:
            remove(args.workdir)


if __name__ == "__main__":
    main()
