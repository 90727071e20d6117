"""Memory of one training stage of a 2x7B FlexOlmo: what barkit's trainer allocates against the minimum.

Builds the 7B shape (hidden 4096, intermediate 11008, 32 heads, vocab 100352) with 1 and 2 layers on the
meta device (exact tensor sizes, no memory), sets it up exactly as `train()` does under bf16 mixed precision
(the stage's trainable set, the anchor's rows split off, trainable tensors in fp32, frozen ones in bf16,
barkit's AdamW) and counts the weights' bytes; then runs one forward, backward and optimizer step and counts
the gradients and optimizer state that exist after it. (Meta tensors have no autocast, so for that pass the
frozen tensors are widened to fp32 first: it changes no gradient or state, which only trainable tensors get.) Next
to it, the same stage as barkit trained before the anchor was split off (fp32 weights, fused expert tensors
with gradients and AdamW moments for the anchor's rows, and a copy of those rows to restore). Per-layer
growth (2 layers - 1 layer) extrapolates both to 32 layers. The minimum is trainable x (fp32 gradient + two
fp32 moments) + every weight in its dtype; `barkit plan` predicts the same stage from the config alone.

    python benchmarks/bench_memory.py          # ~30 s
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, FlexOlmoConfig

from barkit.arch import ARCHITECTURES
from barkit.train import trainable
from barkit.train.memory import stage_memory
from barkit.train.optim import build_optimizer
from barkit.train.stages import STAGE_TRAINABLE, OptimConfig, StageConfig

SHAPE = dict(vocab_size=100352, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
             num_key_value_heads=32, num_experts=2, num_experts_per_tok=2, norm_topk_prob=False)
SPEC = ARCHITECTURES["olmo2"]
GB = 1e9


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def measure(layers: int, stage: str, split: bool) -> dict:
    """Bytes after one step: barkit's trainer (split) or the fused fp32 setup it replaced."""
    config = FlexOlmoConfig(num_hidden_layers=layers, **SHAPE)
    with torch.device("meta"):  # batched_mm: grouped_mm's meta kernel takes bf16 only
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if split else torch.float32,
                                                 experts_implementation="batched_mm")
    plan = trainable.build_plan(model, STAGE_TRAINABLE[stage], SPEC, 2, stage, False)
    trainable.apply(plan, model)
    count = trainable.count(plan, model)[0]
    restore = 0
    if split:
        trainable.split_rows(plan, model, master_dtype=torch.float32)
    else:  # frozen rows of partial tensors: kept as a copy to restore after every step
        params = dict(model.named_parameters())
        restore = sum(params[n][0].numel() * (params[n].shape[0] - len(r)) * 4 for n, r in plan.partial.items())
    weights = _bytes(model.parameters())
    for param in model.parameters():
        param.data = param.data.float()  # see the module docstring: dispatch only
    cfg = StageConfig(stage=stage, model="-", data=["-"], out="-", optim=OptimConfig(lr=1e-4)).resolve()
    optimizer = build_optimizer(model, cfg, SPEC)
    ids = torch.zeros((1, 8), dtype=torch.long, device="meta")
    model(input_ids=ids).logits.float().mean().backward()
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {"trainable": count, "weights": weights,
            "grads": _bytes(p.grad for p in model.parameters()), "adam": _bytes(state), "restore": restore}


def at_32(stage: str, split: bool) -> dict:
    one, two = measure(1, stage, split), measure(2, stage, split)
    return {k: one[k] + 31 * (two[k] - one[k]) for k in one}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        FlexOlmoConfig(num_hidden_layers=32, dtype="bfloat16", **SHAPE).save_pretrained(tmp)
        print("2x7B FlexOlmo (11.63B parameters), one training stage, 32 layers (extrapolated from 1 and 2), "
              "activations excluded, GB\n")
        print("| stage | trainable | before: weights + grads + AdamW + restore | barkit: weights + grads + AdamW | "
              "minimum | barkit / minimum | before / minimum | barkit plan | plan / measured |")
        print("|---" * 9 + "|")
        worst = 0.0
        for stage in ("midtrain", "sft", "rl"):
            old, new = at_32(stage, split=False), at_32(stage, split=True)
            minimum = new["weights"] + new["trainable"] * 12
            total_old = old["weights"] + old["grads"] + old["adam"] + old["restore"]
            total_new = new["weights"] + new["grads"] + new["adam"]
            planned = stage_memory(Path(tmp), stage).state_bytes
            worst = max(worst, total_new / minimum)
            print(f"| {stage} | {new['trainable'] / 1e9:.2f}B | {old['weights'] / GB:.1f} + {old['grads'] / GB:.1f} + "
                  f"{old['adam'] / GB:.1f} + {old['restore'] / GB:.1f} = {total_old / GB:.1f} | "
                  f"{new['weights'] / GB:.1f} + {new['grads'] / GB:.1f} + {new['adam'] / GB:.1f} = "
                  f"{total_new / GB:.1f} | {minimum / GB:.1f} | {total_new / minimum:.3f} | "
                  f"{total_old / minimum:.2f} | {planned / GB:.1f} | {planned / total_new:.3f} |")
    return 0 if worst <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
