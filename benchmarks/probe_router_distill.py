"""Probe: train a composed MoE's router by distillation instead of the LM loss (a README router variant).

Every chat of the router sample gets as targets the full next-token distributions of its stratum's teacher
(the dense anchor for general chats, the domain's 2x model for that domain's chats), so the router sees a
whole distribution per token instead of one label. Everything else is `barkit route` as the demo runs it
(same sample, steps, lr, schedule; only router weights train). Not shipped: it scored the same as the LM loss
(72.9 against 72.7; math 67.2, tool 67.2), which places the routing gap in the router's capacity, not its signal.

    python benchmarks/probe_router_distill.py --demo runs/demo --out runs/diag/distill  # ~2.5 min + eval
    barkit eval runs/diag/distill --world runs/demo/world --out runs/diag/distill/eval

Teacher distributions are computed once up front, one teacher in memory at a time, and kept in fp16 at the
target positions only.
"""

from __future__ import annotations

import argparse
import math

import torch

DOMAINS = {"math": "rl", "code": "rl", "tool_use": "sft", "safety": "sft"}  # the demo's final stage per domain


def teacher_targets(examples_per_file: list[list], teachers: list[str], cfg, soft: dict) -> list:
    """The router stage's stratified sample, with each example's teacher probabilities stored in `soft`."""
    from transformers import AutoModelForCausalLM

    from barkit.train import data

    sample = []
    for i, (examples, teacher_path) in enumerate(zip(examples_per_file, teachers)):
        n = min(len(examples), max(cfg.min_rows_per_file, math.ceil(cfg.sample_fraction * len(examples))))
        chosen = data.take(examples, n, cfg.seed + i)  # the rows data.stratified_sample draws
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path).eval()
        with torch.no_grad():
            for j in range(0, len(chosen), 64):
                part = chosen[j:j + 64]
                batch = data.collate(part, 0)  # right padding, masked: any id will do
                logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 use_cache=False).logits.float()
                for k, example in enumerate(part):
                    labels = torch.tensor(example.labels)
                    positions = (labels[1:] != data.IGNORE).nonzero().flatten()  # position p predicts p + 1
                    soft[id(example)] = (positions, torch.softmax(logits[k, positions], -1).half())
        del teacher
        sample.extend(chosen)
    return sample


def install(teachers: list[str]) -> None:
    """Patch the router stage: teacher-labelled sample in, cross-entropy against the teachers out."""
    from barkit.train import data, engine, loop

    soft: dict = {}
    load_data = engine.load_data

    def load_with_teachers(cfg, tokenizer):
        if cfg.stage != "router":
            return load_data(cfg, tokenizer)
        per_file = [data.tokenize_chats(p, tokenizer, cfg.seq_len)[0] for p in cfg.data]
        return teacher_targets(per_file, teachers, cfg, soft), []

    def distill_step(self, step, update):
        batch = [self.examples[i] for i in self.order.batch(step)]
        targets = sum(e.num_targets for e in batch)
        inputs = data.collate_packed(batch, self.pad_id, self.cfg.seq_len)
        out = self.model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], use_cache=False)
        logp = torch.log_softmax(out.logits.float(), -1)
        loss = logp.new_zeros(())
        for r, row in enumerate(data.pack_rows(batch, self.cfg.seq_len)):  # the rows collate_packed builds
            start = 0
            for example in row:
                positions, probs = soft[id(example)]
                loss = loss - (probs.float() * logp[r, start + positions]).sum()
                start += len(example.input_ids)
        self.acc.backward(loss / targets)
        grad_norm = update()
        hard = loop.token_loss_sum(out.logits.detach(), inputs["labels"])
        return {"loss": float(hard) / targets, "distill": float(loss.detach()) / targets, "grad_norm": grad_norm,
                "targets": targets, "tokens": sum(len(e.input_ids) for e in batch)}

    engine.load_data = load_with_teachers
    loop.LMObjective.__call__ = distill_step


def main() -> None:
    from barkit.route import RouteConfig, train_router
    from barkit.toy.recipe import get_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="a finished `barkit demo --profile default` directory")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    world = f"{args.demo}/world"
    install([f"{world}/anchor"] + [f"{args.demo}/experts/{d}/{stage}" for d, stage in DOMAINS.items()])
    recipe = get_recipe("default")
    data = [f"{world}/data/general_sft.jsonl"] + [f"{world}/data/{d}_sft.jsonl" for d in DOMAINS]
    train_router(RouteConfig(model=f"{args.demo}/bar-moe-composed", data=data, out=args.out,
                             sample_fraction=recipe.router_fraction, steps=recipe.router.steps, lr=recipe.router.lr,
                             batch_size=recipe.router.batch_size, seq_len=recipe.seq_len, overwrite=True))


if __name__ == "__main__":
    main()
