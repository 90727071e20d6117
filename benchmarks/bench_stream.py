"""Peak memory of a mid-training run against the size of its data: token shards against JSONL.

Writes text of N and 10 N tokens, tokenises it once into token shards (`barkit data tokenize`), then runs
the same 5-step midtrain of a tiny 2-expert model in a fresh process on each input and reports each run's
peak resident memory (ru_maxrss). Streaming shards keeps the peak flat; reading JSONL into token lists grows
with the data.

    python benchmarks/bench_stream.py --tokens 1000000     # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from barkit.branch import BranchConfig, branch
from barkit.tiny import make_dense_checkpoint

WORDS = ["fox", "dog", "brown", "lazy", "quick", "jumps", "over", "the", "cat", "owl", "sun", "moon"]


def write_text(path: Path, tokens: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w") as handle:
        written = 0
        while written < tokens:
            line = " ".join(rng.choice(WORDS) for _ in range(50))
            handle.write(json.dumps({"text": line}) + "\n")
            written += 100  # ~2 tokens a word with the tiny tokenizer (a word, a space)


CHILD = ("import resource, sys\nfrom barkit.cli import main\ncode = main(sys.argv[1:])\n"
         "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)")


def peak_mb(args: list[str]) -> float:
    """Peak RSS of a fresh process running `barkit ARGS`, as that process reports it at exit."""
    out = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True).stdout
    return int(out.rsplit("PEAK_KB", 1)[1].split()[0]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        anchor, base = make_dense_checkpoint(root / "anchor", seed=0), make_dense_checkpoint(root / "base", seed=1)
        moe = branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(root / "moe")))
        rows = []
        for scale in (1, 10):
            text = root / f"text{scale}.jsonl"
            write_text(text, scale * args.tokens, scale)
            shards = root / f"shards{scale}"
            subprocess.run([sys.executable, "-m", "barkit.cli", "data", "tokenize", "--model", str(moe), "--data",
                            str(text), "--kind", "text", "--seq-len", "128", "--out", str(shards)], check=True)
            meta = json.loads((shards / "meta.json").read_text())
            common = ["adapt", "--stage", "midtrain", "--model", str(moe), "--steps", "5", "--batch-size", "8",
                      "--sequences.seq-len", "128", "--progress", "false", "--overwrite", "true",
                      "--distributed.threads", "1"]
            streamed = peak_mb([*common, "--data", str(shards), "--out", str(root / f"s{scale}")])
            loaded = peak_mb([*common, "--data", str(text), "--out", str(root / f"j{scale}")])
            rows.append((meta["tokens"], streamed, loaded))
        print("| data (tokens) | peak RSS, token shards | peak RSS, JSONL |")
        print("|---|---|---|")
        for tokens, streamed, loaded in rows:
            print(f"| {tokens:,} | {streamed:.0f} MB | {loaded:.0f} MB |")
        (small, s1, j1), (big, s10, j10) = rows
        print(f"\n{big / small:.1f}x the data: token shards peak x{s10 / s1:.2f}, JSONL peak x{j10 / j1:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
