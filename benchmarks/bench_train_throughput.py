"""Training throughput of a 2-expert BAR model vs. the dense anchor of the same shape, through barkit's engine.

Side by side in one run: the dense anchor (all parameters), and its `barkit branch` 2-expert FlexOlmo
(both experts active) trained with all parameters and with BAR's midtrain / sft / rl trainable sets.
For each: median tokens/s over the timed steps, the slowdown relative to dense next to the ratio
predicted from FLOPs, and the memory that training adds per trainable parameter (gradients + AdamW
state, measured on the tensors the engine allocates), plus the same divided over all weights.

    python benchmarks/bench_train_throughput.py            # ~1.2M-param model, 20 steps each
    python benchmarks/bench_train_throughput.py --quick    # smaller and shorter
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from barkit.arch import ARCHITECTURES
from barkit.branch import BranchConfig, branch
from barkit.tiny import tiny_config, tiny_tokenizer
from barkit.train import DistributedConfig, OptimConfig, SequenceConfig, StageConfig, train, trainable
from barkit.train.optim import build_optimizer
from barkit.verify import load_strict

VARIANTS = [  # (label, model, trainable, allow_anchor_updates)
    ("dense anchor, all params", "dense", ["all"], False),
    ("2-expert, all params", "moe", ["all"], True),
    ("2-expert, BAR midtrain set", "moe", ["expert:1", "router:1"], False),
    ("2-expert, BAR sft set", "moe", ["expert:1", "router:1", "embeddings", "lm_head"], False),
    ("2-expert, BAR rl set", "moe", ["expert:1", "router:1", "embeddings", "lm_head", "attention", "norms"], False),
]


def make_models(root: Path, args) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config("olmo2", vocab_size=args.vocab, hidden=args.hidden, layers=args.layers,
                         intermediate=args.intermediate, heads=args.heads, kv_heads=args.heads)
    config.max_position_embeddings = max(256, args.seq_len)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "dense")
    tiny_tokenizer().save_pretrained(root / "dense")
    branch(BranchConfig(anchor=str(root / "dense"), out=str(root / "moe"), verify="keys"))
    return {"dense": root / "dense", "moe": root / "moe"}


def make_text(root: Path, rows: int) -> Path:
    words = "the quick brown fox jumps over the lazy dog and 1 + 2 = 3 def f(x): return x".split()
    gen = torch.Generator().manual_seed(0)
    lines = [" ".join(words[i] for i in torch.randint(len(words), (40,), generator=gen).tolist())
             for _ in range(rows)]
    path = root / "text.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    return path


def matmul_flops(model, plan, tokens_per_seq: int) -> float:
    """Training FLOPs per token: 2 (forward) + 2 (input gradient) per matmul weight element, + 2 more when
    the weight gets a gradient (a fused expert tensor gets a whole-tensor gradient even when only a row of
    it trains), plus causal attention scores (QK^T and AV: 4 * T/2 * H per layer forward, x3 with
    backward). Input gradients below the lowest trainable tensor are counted although autograd skips them."""
    names = set(plan.trainable_names())
    flops = sum(p.numel() * (4 + 2 * (n in names)) for n, p in model.named_parameters()
                if p.dim() >= 2 and n != "model.embed_tokens.weight")  # all experts are active (top-k = E)
    cfg = model.config
    return flops + 4 * (tokens_per_seq / 2) * cfg.hidden_size * cfg.num_hidden_layers * 3


def train_memory(model_dir: Path, declared: list[str], allow: bool, stage: str) -> dict:
    """Bytes the engine adds for training (grads + AdamW moments), measured after one optimizer step."""
    model = load_strict(model_dir).train()
    reader_type = model.config.model_type
    spec = next((s for s in ARCHITECTURES.values() if s.moe_model_type == reader_type), None)
    plan = trainable.build_plan(model, declared, spec, getattr(model.config, "num_experts", 0) if spec else 0,
                                stage, allow)
    trainable.apply(plan, model)
    cfg = StageConfig(stage=stage, model="-", data=["-"], out="-", optim=OptimConfig(lr=1e-3)).resolve()
    optimizer = build_optimizer(model, cfg)
    ids = torch.randint(0, 300, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    count, total = trainable.count(plan, model)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"trainable": count, "total": total, "grad_bytes": grads, "adam_bytes": state, "weight_bytes": weights,
            "plan": plan, "model": model}


def run_variant(label, model_dir, declared, allow, data, args, out_root) -> dict:
    stage = "pretrain" if "dense" in label else "midtrain"
    times: list[float] = []
    tokens = args.batch_size * args.seq_len
    cfg = StageConfig(stage=stage, model=str(model_dir), data=[str(data)], out=str(out_root / label.replace(" ", "_")),
                      trainable=declared, allow_anchor_updates=allow, steps=args.steps, batch_size=args.batch_size,
                      sequences=SequenceConfig(seq_len=args.seq_len), optim=OptimConfig(lr=2e-3),
                      distributed=DistributedConfig(threads=args.threads), progress=False, verify="none")
    began = time.perf_counter()
    train(cfg, on_step=lambda step, row: times.append(row["step_s"]))
    wall = time.perf_counter() - began
    timed = times[args.warmup:] or times
    step_s = statistics.median(timed)
    mem = train_memory(model_dir, declared, allow, stage)
    return {"label": label, "step_s": step_s, "tokens_per_s": tokens / step_s, "wall_s": wall,
            "flops_per_token": matmul_flops(mem["model"], mem["plan"], args.seq_len), **{
                k: v for k, v in mem.items() if k not in ("plan", "model")}}


def run_grpo(model_dir: Path, root: Path, args) -> dict:
    """Seconds per GRPO step (generation + scoring + update) with BAR's rl trainable set."""
    from barkit.train import RLConfig

    gen = torch.Generator().manual_seed(1)
    pairs = torch.randint(10, 99, (64, 2), generator=gen).tolist()
    path = root / "rl.jsonl"
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"{a} + {b} ="}],
                                        "verifier": "math_answer", "answer": str(a + b)}) + "\n" for a, b in pairs))
    rl = RLConfig(prompts_per_step=16, num_generations=8, max_new_tokens=args.rl_new_tokens)
    times: list[float] = []
    cfg = StageConfig(stage="rl", model=str(model_dir), data=[str(path)], out=str(root / "grpo"), steps=args.rl_steps,
                      optim=OptimConfig(lr=1e-4), distributed=DistributedConfig(threads=args.threads), progress=False,
                      verify="none", rl=rl)
    train(cfg, on_step=lambda step, row: times.append(row["step_s"]))
    return {"step_s": statistics.median(times[1:] or times), "sequences": 16 * 8, "new_tokens": args.rl_new_tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=384)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1536)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from the timing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rl-steps", type=int, default=4, help="GRPO steps to time (0: skip)")
    parser.add_argument("--rl-new-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="hidden 64, 2 layers, 8 steps")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.intermediate, args.vocab, args.steps = 64, 2, 192, 768, 8
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models, data = make_models(root, args), make_text(root, rows=args.batch_size * (args.steps + 2) * 4)
        results = [run_variant(label, models[kind], declared, allow, data, args, root)
                   for label, kind, declared, allow in VARIANTS]
        grpo = run_grpo(models["moe"], root, args) if args.rl_steps else None
    dense = results[0]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nmodel: hidden {args.hidden}, {args.layers} layers, intermediate {args.intermediate}, vocab {args.vocab}; "
          f"batch {args.batch_size} x {args.seq_len} tokens; "
          f"{device}; "
          f"median of {args.steps - args.warmup} steps\n")
    header = (f"{'variant':<28} {'params':>9} {'trainable':>9} {'s/step':>7} {'tok/s':>7} {'slowdown':>8} "
              f"{'FLOP ratio':>10} {'train B/trainable':>17} {'B/param (all)':>13}")
    print(header)
    print("-" * len(header))
    for r in results:
        extra = r["grad_bytes"] + r["adam_bytes"]
        r["slowdown"] = dense["tokens_per_s"] / r["tokens_per_s"]
        r["flop_ratio"] = r["flops_per_token"] / dense["flops_per_token"]
        r["train_bytes_per_trainable"] = extra / r["trainable"]
        r["bytes_per_param_all"] = (extra + r["weight_bytes"]) / r["total"]
        print(f"{r['label']:<28} {r['total']:>9,d} {r['trainable']:>9,d} {r['step_s']:>7.3f} {r['tokens_per_s']:>7.0f} "
              f"{r['slowdown']:>7.2f}x {r['flop_ratio']:>9.2f}x {r['train_bytes_per_trainable']:>17.1f} "
              f"{r['bytes_per_param_all']:>13.1f}")
    print("\ntrain B/trainable = (gradients + AdamW moments) / trainable parameters: 12 B for whole tensors; "
          "more when only some rows of a fused expert tensor train (its gradient and moments cover every row).")
    if grpo:
        print(f"\nGRPO on the 2-expert model (BAR rl set): {grpo['step_s']:.2f} s/step for 16 prompts x 8 samples, "
              f"up to {grpo['new_tokens']} new tokens (HF generate + math_answer reward + update)")
    if args.json:
        args.json.write_text(json.dumps({"variants": results, "grpo": grpo}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
