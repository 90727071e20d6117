"""`barkit plan` against the measured peak on CPU: one process and FSDP (one process), side by side.

Writes a random Olmo 2 (hidden 512, FFN 2048, 8 layers, vocab 50304), branches it into a 2x FlexOlmo (~0.11B)
and runs 3 SFT steps of 4 x 512 tokens in fp32 under each strategy (`barkit adapt`, a child process each),
with and without activation checkpointing. The measured peak is the process's resident high-water mark
(`mem_peak_gb` in metrics.jsonl: VmHWM) minus the resident memory of a bare interpreter that imported the same
libraries (measured in this run); the plan is `barkit plan`'s state plus its activation estimate for the
micro-batch plus FSDP's whole root tensors (`StageMemory.peak_bytes`). (On a GPU: docs/performance.md,
`benchmarks/gpu_stage_check.py`.)

    python benchmarks/bench_plan.py          # ~4 min on 2 cores
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
SHAPE = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=8)
SEQ, MICRO = 512, 4
WORDS = "the quick brown fox jumps over lazy dog one two three four five six seven eight nine ten".split()
BARE = ("import torch, transformers, accelerate, barkit.train.engine, barkit.cli; "
        "print([int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0])")


def main() -> None:
    from _random_ckpt import write_random_checkpoint

    from barkit.branch import BranchConfig, branch
    from barkit.tiny import tiny_tokenizer
    from barkit.train.memory import GB, stage_memory

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dense = write_random_checkpoint(tmp / "dense", seed=0, **SHAPE)
        tiny_tokenizer().save_pretrained(dense)
        moe = branch(BranchConfig(anchor=str(dense), base=str(dense), out=str(tmp / "moe"), seed=1))
        rows = [{"messages": [{"role": "user", "content": "say words"},
                              {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(400))}]}
                for _ in range(16)]
        data = tmp / "sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        bare = int(subprocess.run([sys.executable, "-c", BARE], capture_output=True, text=True).stdout)
        mem = stage_memory(moe, "sft", mixed_precision=False)
        print(f"2x FlexOlmo {mem.total / 1e6:.0f}M parameters, fp32, sft, {MICRO} x {SEQ} tokens; bare interpreter "
              f"{bare / GB:.2f} GB\n")
        print("| strategy | act. ckpt | measured peak - bare | plan: state | plan: peak | measured / plan |")
        print("|---|---|---|---|---|---|")
        for strategy in ("ddp", "fsdp"):  # ddp with one process: the plain one-process path
            for ckpt in (False, True):
                out = tmp / f"{strategy}-{ckpt}"
                cmd = [sys.executable, "-m", "barkit.cli", "adapt", "--stage", "sft", "--model", str(moe), "--data",
                       str(data), "--out", str(out), "--steps", "3", "--batch-size", str(MICRO), "--grad-accum", "1",
                       "--sequences.seq-len", str(SEQ), "--distributed.strategy", strategy,
                       "--distributed.activation-checkpointing", str(ckpt).lower(), "--verify", "none",
                       "--progress", "false"]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                peak = max(r["mem_peak_gb"] for r in rows) * 1e9 - bare
                plan = mem.peak_bytes(1, MICRO, SEQ, ckpt)
                print(f"| {strategy} | {'yes' if ckpt else 'no'} | {peak / GB:.2f} GB | {mem.state_bytes / GB:.2f} GB"
                      f" | {plan / GB:.2f} GB | {peak / plan:.2f}x |")


if __name__ == "__main__":
    main()
