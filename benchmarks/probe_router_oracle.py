"""Probe: how far is the trained router from an oracle, and can any linear router be that oracle? (docs/results.md)

The oracle routes each chat as its own 2x model did: a domain's chats to the anchor and that domain's expert with
the 2x router's split (what `barkit select --keep DOMAIN` builds), general chats to the anchor alone. For each
data file (general, then each domain) the probe prints the teacher-forced loss on the assistant tokens and the
share of chats whose every assistant token is the argmax, for the oracle and for the routed MoE. Then, per layer,
it fits the best router the architecture allows (one bias-free linear map of the router input, as in FlexOlmo)
to the oracle's gates on the oracle's own router inputs, a convex problem solved with full-batch L-BFGS, and
prints what that router cannot match: the KL to the oracle's gates, and the weight it leaves on experts the
oracle gives none. The same fit with a bias is shown for comparison (the architecture has none).

    python benchmarks/probe_router_oracle.py runs/demo/bar-moe --composed runs/demo/bar-moe-composed \\
        --world runs/demo/world   # ~1-2 min
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from barkit.select import load_selected
from barkit.train.data import IGNORE, collate, tokenize_chats


def batches(examples: list, pad_id: int, size: int = 50):
    """Right-padded (input ids, boolean attention mask, labels) batches, as training collates them."""
    for start in range(0, len(examples), size):
        batch = collate(examples[start:start + size], pad_id)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        yield ids, (torch.ones_like(ids) if mask is None else mask).bool(), batch["labels"]


@torch.no_grad()
def teacher_forced(model, examples: list, pad_id: int) -> tuple[float, float]:
    """(mean NLL per assistant token, share of chats whose every assistant token is the argmax)."""
    nll, tokens, exact = 0.0, 0, 0
    for ids, mask, labels in batches(examples, pad_id):
        logits = model(input_ids=ids, attention_mask=mask.long()).logits[:, :-1].float()
        target = labels[:, 1:]
        scored = target != IGNORE
        logp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
        nll -= float(logp[scored].sum())
        tokens += int(scored.sum())
        exact += int(((logits.argmax(-1) == target) | ~scored).all(-1).sum())
    return nll / tokens, exact / len(examples)


@torch.no_grad()
def oracle_gates(model, examples: list, pad_id: int, columns: list[int], num_experts: int) -> list[tuple]:
    """Per layer, (router inputs, the oracle's gates over all `num_experts`) on every token of `examples`.

    `model` is the oracle for these chats (anchor alone, or anchor + one expert); `columns` says which of the
    composed MoE's experts its gate rows are."""
    gates = [layer.mlp.gate for layer in model.model.layers]
    caught: dict[int, torch.Tensor] = {}
    hooks = [g.register_forward_hook(lambda m, args, out, k=k: caught.__setitem__(k, args[0].detach()))
             for k, g in enumerate(gates)]
    per_layer: list[list] = [[] for _ in gates]
    try:
        for ids, mask, _ in batches(examples, pad_id):
            model(input_ids=ids, attention_mask=mask.long())
            for k, gate in enumerate(gates):
                x = caught[k].reshape(*ids.shape, -1)[mask].float()
                target = torch.zeros(len(x), num_experts)
                target[:, columns] = F.linear(x, gate.weight.float()).softmax(-1)
                per_layer[k].append((x, target))
    finally:
        for hook in hooks:
            hook.remove()
    return [(torch.cat([x for x, _ in parts]), torch.cat([t for _, t in parts])) for parts in per_layer]


def fit_router(x: torch.Tensor, target: torch.Tensor, bias: bool) -> dict[str, float]:
    """The linear router closest to `target` in cross-entropy (convex; L-BFGS to its plateau)."""
    if bias:
        x = torch.cat([x, torch.ones(len(x), 1) * x.norm(dim=1).mean()], 1)
    w = torch.zeros(target.shape[1], x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(target * torch.log_softmax(x @ w.T, -1)).sum(-1).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    with torch.no_grad():
        p = (x @ w.T).softmax(-1)
        kl = (target * (target.clamp_min(1e-9).log() - p.clamp_min(1e-9).log())).sum(-1).mean()
        off = (p * (target == 0)).sum(-1)
    return {"kl": float(kl), "off": float(off.mean()), "off>0.2": float((off > 0.2).float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the routed toy-world MoE (demo: bar-moe)")
    parser.add_argument("--composed", required=True, help="its composed MoE before router training")
    parser.add_argument("--world", required=True)
    parser.add_argument("--rows", type=int, default=300, help="chats per data file")
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    routed = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    experts = routed.config.barkit_expert_names  # anchor first, then the domains
    files = {"general": None, **{d: d for d in experts[1:]}}
    pad = tokenizer.pad_token_id
    print("| chats | oracle NLL | routed NLL | oracle exact | routed exact |\n|---|---|---|---|---|")
    fits: list[list] = []
    for name, domain in files.items():
        examples = tokenize_chats(Path(args.world) / "data" / f"{name}_sft.jsonl", tokenizer, 128)[0][: args.rows]
        oracle = load_selected(args.composed, [domain] if domain else [])
        (o_nll, o_exact), (r_nll, r_exact) = (teacher_forced(m, examples, pad) for m in (oracle, routed))
        print(f"| {name} | {o_nll:.3f} | {r_nll:.3f} | {o_exact:.3f} | {r_exact:.3f} |")
        columns = [0] + ([experts.index(domain)] if domain else [])
        fits.append(oracle_gates(oracle, examples, pad, columns, len(experts)))
    print("\nBest linear router against the oracle's gates (every token of every file):\n")
    print("| layer | KL (no bias) | off-oracle weight | tokens with > 0.2 off | KL (with bias) | off-oracle weight |")
    print("|---|---|---|---|---|---|")
    for k in range(len(fits[0])):
        x, target = (torch.cat([f[k][i] for f in fits]) for i in (0, 1))
        plain, biased = fit_router(x, target, bias=False), fit_router(x, target, bias=True)
        print(f"| {k} | {plain['kl']:.3f} | {plain['off']:.3f} | {plain['off>0.2']:.3f} | {biased['kl']:.3f} | "
              f"{biased['off']:.3f} |")


if __name__ == "__main__":
    main()
