"""Measure a checkpoint's in-context copying: can it repeat a list of random words it has just read?

    python benchmarks/probe_copying.py CKPT [CKPT ...] [--corpus WORLD/data/pretrain.jsonl] [--items 40] [--words 8]

Why: BAR's domain experts only train their FFN and router row in mid-training, and attention stays frozen
until RL. Skills that copy from the prompt (a function name in code, an argument value in a tool call) then
rely on the *anchor's* induction heads. Real 7B anchors have them; a tiny toy base may not, and then SFT
learns to copy by moving the shared embeddings, which compose averages away. This probe tells the two
cases apart for any causal LM checkpoint.

For each item it builds `w1 ... wn. Again: w1 ... wn.` from random whole-word vocabulary tokens and prints
  - nll(first): mean per-token NLL on the first list (unpredictable: about log of the pool size);
  - nll(repeat): the same on the repeat. An induction-capable model drives it near 0; a model that only
    knows "some word from the context" sits near log(n); no copying at all stays near nll(first);
  - exact: share of items whose greedy continuation after "Again:" repeats the list exactly.
Costs a few seconds per checkpoint on CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def word_pool(tokenizer, corpus: str | None, limit: int = 400) -> list[str]:
    """Whole words the tokenizer encodes as one token with a leading space, so every list item is one token.

    With a corpus (JSONL with a `text` field, or plain text), the `limit` most frequent such words in it: words
    the model has seen, so nll(first) measures surprise rather than untrained embeddings.
    """
    def single_token(word: str) -> bool:
        return len(tokenizer(f" {word}", add_special_tokens=False).input_ids) == 1

    if corpus:
        counts: collections.Counter = collections.Counter()
        for line in Path(corpus).read_text().splitlines():
            text = json.loads(line).get("text", "") if line.startswith("{") else line
            counts.update(w for w in re.findall(r"[A-Za-z]{3,}", text))
        return sorted(w for w, _ in [c for c in counts.most_common() if single_token(c[0])][:limit])
    words = {tokenizer.decode([i])[1:] for i in range(len(tokenizer))}
    words = [w for w in words if w.isalpha() and len(w) >= 3 and single_token(w)]
    return sorted(random.Random(0).sample(sorted(words), min(limit, len(words))))


@torch.no_grad()
def probe(path: str, items: int, n_words: int, seed: int, corpus: str | None) -> dict[str, float]:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    pool, rng = word_pool(tokenizer, corpus), random.Random(seed)
    if len(pool) < 2 * n_words:
        raise SystemExit(f"{path}: only {len(pool)} single-token words in the vocabulary; need {2 * n_words}")
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    head, cue = encode("Words:"), encode(". Again:")
    nll_first = nll_repeat = exact = 0.0
    for _ in range(items):
        listed = encode(" " + " ".join(rng.sample(pool, n_words)))
        first = head + listed
        ids_1T = torch.tensor([first + cue + listed])
        logprobs_TV = torch.log_softmax(model(ids_1T).logits[0, :-1].float(), dim=-1)
        nll_T = -logprobs_TV.gather(1, ids_1T[0, 1:, None])[:, 0]  # nll_T[i] scores token i + 1
        nll_first += nll_T[len(head) - 1:len(first) - 1].mean().item()
        nll_repeat += nll_T[len(first) + len(cue) - 1:].mean().item()
        prompt_1T = torch.tensor([first + cue])
        out = model.generate(prompt_1T, max_new_tokens=len(listed), do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        exact += out[0, prompt_1T.shape[1]:].tolist() == listed
    return {"nll_first": nll_first / items, "nll_repeat": nll_repeat / items, "exact": exact / items,
            "pool": len(pool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--words", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--corpus", help="draw words from this text/JSONL file (the toy world: data/pretrain.jsonl)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"| checkpoint | nll(first) | nll(repeat) | log({args.words}) | exact repeat |")
    print("|---|---|---|---|---|")
    for path in args.checkpoints:
        r = probe(path, args.items, args.words, args.seed, args.corpus)
        print(f"| {path} | {r['nll_first']:.2f} | {r['nll_repeat']:.2f} | {math.log(args.words):.2f} | "
              f"{r['exact']:.0%} ({args.items} items, pool {r['pool']}) |", flush=True)


if __name__ == "__main__":
    main()
