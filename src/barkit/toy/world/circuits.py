"""Seed a freshly initialised Olmo 2 model with an induction circuit, so the toy base can copy from context.

Real anchors copy tokens from their prompt (induction heads, grown over billions of tokens). Code (a
function name), tool use (an argument value) and reasoning (a fact stated in the prompt) all need it, and
BAR's experts rely on it: attention is frozen in mid-training and SFT. A 1M-parameter model on a 2-core
budget never grows one: 600 steps of the world corpus, or 1,750 steps of repeated random tokens, left
the repeat NLL of a random word list at ~4.4 and the greedy exact-repeat rate at 0. Without it, each
expert learns to copy by moving the shared embeddings, and averaging those at compose time erases the
skill. So the base starts from a hand-wired two-head circuit that pretraining then keeps and builds on:

- layer 0, head 0 (previous-token head): query and key read a constant embedding dimension only, and the
  query is the key rotated back by one position in the fast RoPE pairs, so the score peaks at offset 1.
  The value copies the token's code into a "previous token" block of the residual stream.
- layer 1, head 0 (induction head): query = the current token's code, key = the previous-token block,
  matched in the slow RoPE pairs that barely rotate over a sequence, so the score does not depend on
  distance. The value copies the attended token's code into an "output" block that lm_head reads.

Every other attention and MLP output projection starts at zero, so at step 0 the model is exactly this
circuit (greedy exact repeat of 8 random words: 34/40); it is written into slices of the residual stream
that normal training is free to reuse. Token codes sit at unit scale: at the usual 0.02 init, the first
Adam steps rewrite them before the circuit pays off, and the copying is lost for good.
"""

from __future__ import annotations

import itertools
import math

import torch

from barkit.errors import BarkitError

CONSTANT_VALUE = 1.0
NORM_GAIN = 2.0  # q_norm/k_norm gain on the circuit heads: attention logits up to ~90, sharp enough to copy
UNEMBED_GAIN = 1.5  # lm_head scale on the output block; larger makes the step-0 model overconfident


def rope_frequencies(head_dim: int, theta: float) -> list[float]:
    """RoPE's per-pair angular speeds (radians per position), as transformers' default rope computes them."""
    return [theta ** (-2 * i / head_dim) for i in range(head_dim // 2)]


def previous_token_pairs(freqs: list[float], positions: int, candidates: int = 6) -> tuple[int, ...]:
    """The subset of fast pairs whose summed cosines best single out offset 1 over every other offset.

    >>> previous_token_pairs(rope_frequencies(32, 500000.0), 128)
    (0, 1, 3)
    """
    offsets = range(positions)
    best, best_margin = (0,), -math.inf
    for size in range(1, candidates + 1):
        for subset in itertools.combinations(range(min(candidates, len(freqs))), size):
            def score(d: int) -> float:
                return sum(math.cos((d - 1) * freqs[i]) for i in subset) / len(subset)
            margin = 1.0 - max(score(d) for d in offsets if d != 1)
            if margin > best_margin + 1e-9:
                best, best_margin = subset, margin
    return best


def slow_pairs(freqs: list[float], positions: int) -> list[int]:
    """Pairs that rotate less than one radian across the sequence: content matches there ignore distance."""
    return [i for i, f in enumerate(freqs) if f * positions < 1.0]


def check_shape(config, positions: int) -> None:
    """The circuit needs two layers, four head-sized blocks of the residual stream and slow RoPE pairs."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if config.num_hidden_layers < 2 or heads < 4 or kv_heads != heads:
        raise BarkitError(f"copy circuit: needs >= 2 layers, >= 4 heads and no grouped KV heads; got "
                          f"{config.num_hidden_layers} layers, {heads} heads, {kv_heads} KV heads")
    theta = config.rope_parameters["rope_theta"]
    if len(slow_pairs(rope_frequencies(config.hidden_size // heads, theta), positions)) < 4:
        raise BarkitError(f"copy circuit: rope_theta {theta:g} too small: fewer than 4 RoPE pairs rotate "
                          f"< 1 rad in {positions} positions")


@torch.no_grad()
def seed_copy_circuit(model, seed: int, positions: int = 128) -> dict:
    """Wire the previous-token and induction heads into `model` (an untrained Olmo2ForCausalLM) in place.

    Residual blocks (each one head wide): T = token code, then one constant dimension, P = previous token's
    code (written by layer 0), O = copied token's code (written by layer 1, read by lm_head).
    """
    config = model.config
    check_shape(config, positions)
    hd = config.hidden_size // config.num_attention_heads
    half = hd // 2
    freqs = rope_frequencies(hd, config.rope_parameters["rope_theta"])
    fast, slow = previous_token_pairs(freqs, positions), slow_pairs(freqs, positions)
    T, P, O = slice(0, hd), slice(2 * hd, 3 * hd), slice(3 * hd, 4 * hd)
    const = hd
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randn(config.vocab_size, hd, generator=gen)
    codes = codes / codes.norm(dim=1, keepdim=True) * math.sqrt(hd)  # unit RMS per token

    embed = model.model.embed_tokens.weight
    embed[:, T] = codes
    embed[:, const] = CONSTANT_VALUE
    layers = model.model.layers
    for layer in layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()

    prev = layers[0].self_attn
    for proj in (prev.q_proj, prev.k_proj, prev.v_proj):
        proj.weight[:hd].zero_()
    for i in fast:  # z_q = e^{-i*theta} z_k: the rotated dot product peaks one position back
        prev.q_proj.weight[i, const] = math.cos(freqs[i])
        prev.q_proj.weight[i + half, const] = -math.sin(freqs[i])
        prev.k_proj.weight[i, const] = 1.0
    prev.v_proj.weight[:hd, T] = torch.eye(hd)
    prev.o_proj.weight[P, :hd] = torch.eye(hd)

    induction = layers[1].self_attn
    for proj in (induction.q_proj, induction.k_proj, induction.v_proj):
        proj.weight[:hd].zero_()
    for j, dim in enumerate(slow + [i + half for i in slow]):
        induction.q_proj.weight[dim, T.start + j] = 1.0
        induction.k_proj.weight[dim, P.start + j] = 1.0
    induction.v_proj.weight[:hd, T] = torch.eye(hd)
    induction.o_proj.weight[O, :hd] = torch.eye(hd)

    for attn in (prev, induction):
        attn.q_norm.weight[:hd] = NORM_GAIN
        attn.k_norm.weight[:hd] = NORM_GAIN
    model.lm_head.weight.zero_()
    model.lm_head.weight[:, O] = UNEMBED_GAIN * codes / math.sqrt(hd)
    return {"previous_token_pairs": list(fast), "match_pairs": slow}
