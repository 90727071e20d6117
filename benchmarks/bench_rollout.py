"""Rollouts on vLLM beside HF `generate`, on the same prompts, and an RL step's time split with each engine.

    .venv-vllm/bin/python benchmarks/bench_rollout.py [--hidden 256 --layers 4 --prompts 16 --samples 4
                                                      --new-tokens 48 --steps 3]

Builds a FlexOlmo 2x (BAR's branch of a random Olmo 2; head dim 32, which vLLM's CPU attention needs), then:
1. rollout throughput: `prompts x samples` completions of up to `new_tokens` tokens (sampling, temperature 1, no
   early stop), generated tokens per second for vLLM (multi-process engine, warm) and HF `generate`;
2. GRPO steps with `rl.engine` hf and vllm: seconds per step spent generating, syncing weights, and the rest
   (forward/backward and optimizer), from the run's metrics (mean over steps after the first).
Run it in the vllm venv (scripts/install.sh --vllm); it prints one table per part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

WORDS = ["fox", "dog", "brown", "lazy", "quick", "jumps", "over", "the", "one", "two", "three", "four"]


def build(root: Path, hidden: int, layers: int) -> Path:
    from barkit.branch import BranchConfig, branch
    from barkit.tiny import make_dense_checkpoint

    shape = dict(hidden=hidden, layers=layers, heads=hidden // 32, kv_heads=max(1, hidden // 64),
                 intermediate=4 * hidden)
    anchor = make_dense_checkpoint(root / "anchor", "olmo2", seed=0, **shape)
    base = make_dense_checkpoint(root / "base", "olmo2", seed=1, **shape)
    return branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(root / "bar-2x"), seed=1))


def throughput(model_dir: Path, prompts: list[list[int]], samples: int, new_tokens: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    from barkit.train.rollout import left_pad
    from barkit.vllm_engine import VLLMEngine

    out = {}
    engine = VLLMEngine(model_dir, max_model_len=256, seed=0)
    try:
        engine.generate(prompts[:2], n=2, greedy=False, max_new_tokens=4)  # warm
        start = time.perf_counter()
        got = engine.generate(prompts, n=samples, greedy=False, max_new_tokens=new_tokens)
        seconds = time.perf_counter() - start
        out["vllm"] = sum(len(s.token_ids) for o in got for s in o) / seconds
    finally:
        engine.close()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids, mask = left_pad([p for p in prompts for _ in range(samples)], 1)
    with torch.no_grad():
        model.generate(input_ids=ids[:2], attention_mask=mask[:2], max_new_tokens=4, do_sample=True, pad_token_id=1)
        start = time.perf_counter()
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=True,
                             temperature=1.0, top_k=0, eos_token_id=None, pad_token_id=1)
        seconds = time.perf_counter() - start
    out["hf"] = (gen.shape[1] - ids.shape[1]) * gen.shape[0] / seconds
    return out


def rl_split(model_dir: Path, root: Path, engine: str, args) -> dict[str, float]:
    from barkit.config import load_config
    from barkit.train import StageConfig, train

    data = root / "rl.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"count the {w}"}],
                                        "verifier": "string_f1", "answer": "the quick brown fox"}) + "\n"
                            for w in WORDS))
    cfg = load_config(StageConfig, values={
        "stage": "rl", "model": str(model_dir), "data": [str(data)], "out": str(root / f"rl-{engine}"),
        "steps": args.steps, "progress": False, "sequences": {"seq_len": 256}, "optim": {"lr": 1e-3},
        "rl": {"prompts_per_step": 4, "num_generations": args.samples, "max_new_tokens": args.new_tokens,
               "engine": engine}})
    out = train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r][1:] or [r for r in rows if "loss" in r]
    mean = {k: statistics.mean(r[k] for r in steps) for k in ("step_s", "generate_s", "sync_s")}
    mean["train"] = mean["step_s"] - mean["generate_s"] - mean["sync_s"]
    if engine == "vllm":
        mean["engine_logp_diff"] = statistics.mean(r["engine_logp_diff"] for r in steps)
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    from barkit.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    prompts = [tok.encode(f"the {WORDS[i % len(WORDS)]} {i} jumps over", add_special_tokens=False)
               for i in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build(root, args.hidden, args.layers)
        from barkit.checkpoint import CheckpointReader

        reader = CheckpointReader(model_dir)
        params = sum(torch.Size(reader.shape(k)).numel() for k in reader.keys())
        rates = throughput(model_dir, prompts, args.samples, args.new_tokens)
        print(f"\nrollout: {args.prompts} prompts x {args.samples} samples x {args.new_tokens} tokens, "
              f"FlexOlmo 2x ({params / 1e6:.1f}M parameters: hidden {args.hidden}, {args.layers} layers), fp32, "
              f"{torch.get_num_threads()} threads")
        print("| engine | tokens/s | vs HF |\n|---|---|---|")
        for name in ("hf", "vllm"):
            print(f"| {name} | {rates[name]:.1f} | {rates[name] / rates['hf']:.2f}x |")
        splits = {engine: rl_split(model_dir, root, engine, args) for engine in ("hf", "vllm")}
        print(f"\nGRPO step ({args.steps} steps, 4 prompts x {args.samples} samples, up to {args.new_tokens} tokens), "
              "seconds per step (mean over steps after the first):")
        print("| engine | step | generate | sync | train (fwd/bwd/optim) |\n|---|---|---|---|---|")
        for engine, m in splits.items():
            print(f"| {engine} | {m['step_s']:.2f} | {m['generate_s']:.2f} | {m['sync_s']:.2f} "
                  f"| {m['train']:.2f} |")
        print(f"mean |trainer - engine| log-probability per token: {splits['vllm']['engine_logp_diff']:.2e}")


if __name__ == "__main__":
    main()
