"""Probe: can a linear map of one token's router input tell the domains apart? (docs/results.md, routing gap)

For every layer of a composed or routed MoE it collects the router's input on the assistant tokens of each
data file's first chats (general, math, code, tool use, safety), fits a multinomial logistic regression on
70% of the tokens (standardised features, L-BFGS) and prints its accuracy on the other 30%, next to the
routing share the model's own router gives each expert on each domain's tokens. High probe accuracy with
a spread-out routing share means the router could separate the domains but was not trained to.

    python benchmarks/probe_router_separability.py runs/demo/bar-moe --world runs/demo/world   # ~1 min
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer


def router_inputs(model, tokenizer, rows: list[dict], seq_len: int) -> list[torch.Tensor]:
    """Per layer, the router's input on every assistant token of `rows` (tokens x hidden)."""
    gates = [layer.mlp.gate for layer in model.model.layers]
    caught: dict[int, torch.Tensor] = {}
    hooks = [g.register_forward_hook(lambda m, args, out, k=k: caught.__setitem__(k, args[0].detach()))
             for k, g in enumerate(gates)]
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    per_layer: list[list[torch.Tensor]] = [[] for _ in gates]
    try:
        for row in rows:
            ids = tokenizer.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=True,
                                                return_dict=True)["input_ids"][:seq_len]
            ids_BT = torch.tensor([ids])
            starts = (ids_BT[0] == assistant).nonzero()
            if not len(starts):
                continue
            with torch.no_grad():
                model(ids_BT)
            start = int(starts[-1]) + 1
            for k in range(len(gates)):
                per_layer[k].append(caught[k].reshape(len(ids), -1)[start:])
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(xs) for xs in per_layer]


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, classes: int, seed: int = 0) -> tuple[float, list[float]]:
    """Held-out accuracy (overall, per class) of a logistic regression fitted on a random 70%."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    train, test = perm[: int(0.7 * len(y))], perm[int(0.7 * len(y)):]
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x[train] @ w + b, y[train]) + 1e-4 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    pred = (x[test] @ w + b).argmax(-1)
    per_class = [float((pred[y[test] == c] == c).float().mean()) for c in range(classes)]
    return float((pred == y[test]).float().mean()), per_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a composed or routed toy-world MoE")
    parser.add_argument("--world", required=True)
    parser.add_argument("--rows", type=int, default=150, help="chats per data file")
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    experts = model.config.barkit_expert_names  # anchor first, then the domains
    files = {"general": "general_sft.jsonl", **{d: f"{d}_sft.jsonl" for d in experts[1:]}}
    xs, ys = [], []
    for label, name in enumerate(files.values()):
        lines = (Path(args.world) / "data" / name).read_text().splitlines()[: args.rows]
        layers = router_inputs(model, tokenizer, [json.loads(line) for line in lines], seq_len=128)
        xs.append(layers)
        ys.append(torch.full((len(layers[0]),), label))
    y = torch.cat(ys)
    print(f"tokens per data file: {dict(zip(files, (len(t) for t in ys)))}")
    print(f"routing share columns: {experts}")
    for k in range(len(xs[0])):
        x = torch.cat([layers[k] for layers in xs])
        acc, per_class = probe_accuracy(x, y, len(files))
        weight = model.model.layers[k].mlp.gate.weight
        shares = F.linear(x, weight).float().softmax(-1)
        print(f"layer {k}: probe accuracy {acc:.3f} ({', '.join(f'{n} {a:.2f}' for n, a in zip(files, per_class))})")
        for label, name in enumerate(files):
            row = shares[y == label].mean(0).tolist()
            print(f"    {name:>9} tokens -> router shares {' '.join(f'{v:.2f}' for v in row)}")


if __name__ == "__main__":
    main()
