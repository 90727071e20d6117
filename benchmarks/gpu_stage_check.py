"""The 7B guide's stages at a 1B shape on one GPU: tokens/s, MFU and peak memory against `barkit plan`.

Writes a random bf16 Olmo 2 1B-shaped dense checkpoint (16 layers, hidden 2048, FFN 8192, vocab 50304),
branches it into a 2x1B FlexOlmo (2.1B parameters) and runs the guide's commands on it, as a user would
(`python -m barkit.cli`, one process each): midtrain, SFT under every strategy x activation checkpointing,
RL with HF generation, compose + router, eval with `--device auto`. Each stage logs its GPU memory per step
(`mem_peak_gb`: the allocator's peak during the step; `mem_after_step_gb`: what stays allocated), and the
table sets the measured peak beside `barkit plan`'s estimate for the same micro-batch. MFU counts model
FLOPs only (2N forward + 2N input gradients + 2N_trainable weight gradients + causal attention; no
recomputation) against the H200's 989 TFLOP/s dense bf16.

Finally, the transformers floor: the same FSDP + checkpointing + bf16 SFT under the transformers found on the
machine (if it differs from the pinned one) on the tiny and on the 1B model.

    python benchmarks/gpu_stage_check.py --out results/    # one GPU, ~6 min
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PEAK_TFLOPS = 989.0  # H200 SXM dense bf16
SEQ = 2048
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            vocab_size=512)
WORDS = "the quick brown fox jumps over lazy dog one two three four five six seven eight nine ten".split()


def _text(rng: random.Random, chars: int) -> str:
    out = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(WORDS))
    return " ".join(out)


def write_data(root: Path) -> dict[str, Path]:
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    files = {"text": root / "midtrain.jsonl", "chat": root / "sft.jsonl", "rl": root / "rl.jsonl",
             "suite": root / "suite.jsonl"}
    files["text"].write_text("".join(json.dumps({"text": _text(rng, 9000)}) + "\n" for _ in range(48)))
    files["chat"].write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": _text(rng, 200)}, {"role": "assistant", "content": _text(rng, 2600)}]}) + "\n"
        for _ in range(64)))
    files["rl"].write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"what is {i} + 1?"}],
                                               "verifier": "math_answer", "answer": str(i + 1)}) + "\n"
                                   for i in range(32)))
    files["suite"].write_text("".join(json.dumps({
        "id": f"q{i}", "category": "math", "benchmark": "toy", "verifier": "math_answer", "answer": str(i + 1),
        "messages": [{"role": "user", "content": f"what is {i} + 1?"}]}) + "\n" for i in range(32)))
    return files


def run(log, label: str, args: list[str], env: dict | None = None, timeout: float = 300) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "barkit.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    wall = time.perf_counter() - t0
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    log.write(f"## {label}: rc {proc.returncode}, {wall:.1f} s\n$ barkit {' '.join(args)}\n" + "\n".join(tail) + "\n\n")
    log.flush()
    print(f"{label}: rc {proc.returncode} in {wall:.1f} s", flush=True)
    if proc.returncode:
        print("\n".join(tail), flush=True)
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "tail": tail[-2:]}


def metrics_of(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def flops_per_token(mem, stage_trains_embeddings: bool) -> float:
    embed = mem.vocab * mem.hidden
    n = mem.total - embed
    n_train = mem.trainable - (embed if stage_trains_embeddings else 0)
    attention = 6 * mem.layers * SEQ * mem.hidden / 2 * 2  # QK^T and AV, causal half, forward + backward
    return 4 * n + 2 * n_train + attention


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu-results")
    parser.add_argument("--work", default="/tmp/barkit-gpu")
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide model, to try the script on a CPU")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", default="all", help="comma-separated run labels (default: all)")
    args = parser.parse_args()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    log = (out / "log.md").open("w")

    import torch
    import transformers
    from _random_ckpt import write_random_checkpoint

    from barkit.tiny import tiny_tokenizer
    from barkit.train.memory import GB, stage_memory

    facts = {"torch": torch.__version__, "transformers": transformers.__version__,
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(facts, flush=True)
    results: dict = {"facts": facts, "runs": {}}

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1))

    t0 = time.perf_counter()
    shape = TINY if args.tiny else {"num_hidden_layers": args.layers}
    dense = write_random_checkpoint(work / "dense", seed=0, **shape)
    tiny_tokenizer().save_pretrained(dense)
    results["write_dense_s"] = round(time.perf_counter() - t0, 1)
    data = write_data(work / "data")
    moe = work / "2x-base"
    results["runs"]["branch"] = run(log, "branch", ["branch", str(dense), "--base", str(dense), "--out", str(moe),
                                                    "--overwrite"])
    plan = run(log, "plan", ["plan", str(moe), "--devices", "1", "--device-memory", "141", "--seq-len", str(SEQ)])
    results["runs"]["plan"] = plan
    recipe = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "bar-olmo2-7b.yaml"
    common = ["--config", str(recipe), "--sequences.seq-len", str(SEQ), "--steps", str(args.steps),
              "--log-every", "1", "--verify", "none", "--checkpoint.save-every", "0", "--progress", "false",
              "--overwrite"]
    micro = 4
    wanted = lambda label: args.runs == "all" or label in args.runs.split(",")  # noqa: E731
    table = []

    def stage(label, stage_name, model, data_file, extra, trains_embeddings):
        if time.perf_counter() - began > args.budget_s or not wanted(label):
            print(f"{label}: skipped", flush=True)
            return model if label.startswith("midtrain") else None
        dst = work / label
        res = run(log, label, ["adapt", "--stage", stage_name, "--model", str(model), "--data", str(data_file),
                               "--out", str(dst), *common, *extra])
        rows = [r for r in metrics_of(dst) if r.get("step", 0) >= 1]
        res["metrics"] = rows
        results["runs"][label] = res
        if res["rc"] == 0 and rows:
            mem = stage_memory(model, stage_name)
            ckpt = "--distributed.activation-checkpointing" in extra and "false" not in extra
            timed = rows[1:] or rows
            tps = statistics.median(r["tokens_per_s"] for r in timed if "tokens_per_s" in r) if any(
                "tokens_per_s" in r for r in timed) else None
            peak = max(r.get("mem_peak_gb", 0) for r in rows)
            after = rows[-1].get("mem_after_step_gb")
            planned = mem.peak_bytes(1, micro, SEQ, ckpt) / GB
            mfu = tps * flops_per_token(mem, trains_embeddings) / (PEAK_TFLOPS * 1e12) if tps else None
            table.append({"run": label, "tokens_per_s": tps, "mfu": mfu, "peak_gb": peak,
                          "after_step_gb": after, "plan_state_gb": mem.state_bytes / GB,
                          "plan_total_gb": planned, "peak_over_plan": peak / planned if planned else None})
        save()
        return dst if res["rc"] == 0 else None

    base_mb = ["--batch-size", str(2 * micro), "--grad-accum", "2"]
    ckpt_on, ckpt_off = ["--distributed.activation-checkpointing", "true"], ["--distributed.activation-checkpointing",
                                                                              "false"]
    fsdp = ["--distributed.strategy", "fsdp"]
    mid = stage("midtrain-fsdp-ckpt", "midtrain", moe, data["text"], [*base_mb, *fsdp, *ckpt_on], False)
    sft = stage("sft-fsdp-ckpt", "sft", mid or moe, data["chat"], [*base_mb, *fsdp, *ckpt_on], True)
    stage("sft-fsdp", "sft", moe, data["chat"], [*base_mb, *fsdp, *ckpt_off], True)
    stage("sft-single-ckpt", "sft", moe, data["chat"], [*base_mb, *ckpt_on], True)
    stage("sft-single", "sft", moe, data["chat"], [*base_mb, *ckpt_off], True)
    stage("rl-fsdp-ckpt", "rl", sft or moe, data["rl"], ["--rl.prompts-per-step", "4", "--rl.num-generations", "4",
                                                        "--rl.max-new-tokens", "64", "--grad-accum", "2", "--steps",
                                                        "2", *fsdp, *ckpt_on], True)
    if sft and wanted("route") and time.perf_counter() - began < args.budget_s:
        composed = work / "composed"
        results["runs"]["compose"] = run(log, "compose", ["compose", str(moe), "--experts", f"a={sft}", f"b={sft}",
                                                          "--out", str(composed), "--overwrite"])
        if results["runs"]["compose"]["rc"] == 0:
            route = work / "bar"
            results["runs"]["route"] = run(log, "route", ["route", str(composed), "--data", str(data["chat"]),
                                                          "--out", str(route), *common, *base_mb, *fsdp])
    if wanted("eval") and time.perf_counter() - began < args.budget_s:
        ev = work / "eval"
        res = run(log, "eval", ["eval", str(moe), "--suite", str(data["suite"]), "--device", "auto",
                                "--max-new-tokens", "64", "--batch-size", "16", "--out", str(ev)])
        if (ev / "results.json").is_file():
            full = json.loads((ev / "results.json").read_text())
            res["placement"], res["timing"] = full.get("placement"), full.get("timing")
        results["runs"]["eval"] = res
    save()

    # the transformers floor: the machine's own transformers (PYTHONPATH without the carried one)
    floor_path = os.environ.get("BARKIT_NATIVE_PYTHONPATH")
    if floor_path is not None and wanted("floor") and time.perf_counter() - began < args.budget_s + 60:
        env = {"PYTHONPATH": floor_path}
        version = subprocess.run([sys.executable, "-c", "import transformers; print(transformers.__version__)"],
                                 capture_output=True, text=True, env={**os.environ, **env}).stdout.strip()
        res = run(log, f"floor-{version}-sft-fsdp-ckpt-bf16", ["adapt", "--stage", "sft", "--model", str(moe), "--data",
                                                               str(data["chat"]), "--out", str(work / "floor"),
                                                               *common, *base_mb, *fsdp, *ckpt_on, "--steps", "2"],
                  env=env)
        results["runs"]["floor"] = {"transformers": version, **res}
    results["table"] = table
    save()
    lines = ["| run | tokens/s | MFU | peak GB | after step GB | plan state GB | plan total GB | peak / plan |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['run']} | {r['tokens_per_s'] or 0:.0f} | {(r['mfu'] or 0) * 100:.1f}% | "
                     f"{r['peak_gb']:.2f} | "
                     f"{r['after_step_gb'] or 0:.2f} | {r['plan_state_gb']:.2f} | {r['plan_total_gb']:.2f} | "
                     f"{r['peak_over_plan']:.2f}x |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
