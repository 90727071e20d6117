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


def offset_pairs(freqs: list[float], positions: int, offset: int, candidates: int = 6) -> tuple[int, ...]:
    """The subset of fast pairs whose summed cosines best single out `offset` over every other offset.

    >>> offset_pairs(rope_frequencies(32, 500000.0), 128, offset=1)
    (0, 1, 3)
    """
    best, best_margin = (0,), -math.inf
    for size in range(1, candidates + 1):
        for subset in itertools.combinations(range(min(candidates, len(freqs))), size):
            def score(d: int) -> float:
                return sum(math.cos((d - offset) * freqs[i]) for i in subset) / len(subset)
            margin = 1.0 - max(score(d) for d in range(positions) if d != offset)
            if margin > best_margin + 1e-9:
                best, best_margin = subset, margin
    return best


def previous_token_pairs(freqs: list[float], positions: int) -> tuple[int, ...]:
    """The pairs of the previous-token head (offset 1)."""
    return offset_pairs(freqs, positions, offset=1)


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
    model.lm_head.weight.zero_()
    _write_token_codes(model, _unit_rms(torch.randn(config.vocab_size, hd, generator=gen)))
    model.model.embed_tokens.weight[:, const] = CONSTANT_VALUE
    layers = model.model.layers
    for layer in layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()

    prev = layers[0].self_attn
    _look_back(prev, head=0, offset=1, pairs=fast, freqs=freqs, const=const)
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
    return {"previous_token_pairs": list(fast), "match_pairs": slow}


def _unit_rms(codes: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit RMS."""
    return codes / codes.norm(dim=1, keepdim=True) * math.sqrt(codes.shape[1])


def _write_token_codes(model, codes: torch.Tensor) -> None:
    """Token codes into the embedding's T block, and lm_head's readout of the O block to match them."""
    hd = codes.shape[1]
    model.model.embed_tokens.weight[:, :hd] = codes
    model.lm_head.weight[:, 3 * hd:4 * hd] = UNEMBED_GAIN * codes / math.sqrt(hd)


def _look_back(attn, head: int, offset: int, pairs: tuple[int, ...], freqs: list[float], const: int) -> None:
    """Make `head` attend `offset` positions back whatever the content: query and key read the constant
    dimension only, and the query is the key rotated back by `offset` positions in `pairs` (z_q = e^{-i*k*theta}
    z_k), so the rotated dot product peaks there."""
    hd = attn.head_dim
    rows = slice(head * hd, (head + 1) * hd)
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        proj.weight[rows].zero_()
    half = hd // 2
    for i in pairs:
        attn.q_proj.weight[head * hd + i, const] = math.cos(offset * freqs[i])
        attn.q_proj.weight[head * hd + i + half, const] = -math.sin(offset * freqs[i])
        attn.k_proj.weight[head * hd + i, const] = 1.0


# In "23+5=28" the token before a result digit is never enough: predicting the tens digit (at "=") needs the
# operands 1-4 tokens back, the ones digit (at "2") the ones 2-4 back. Offset 1 is the previous-token head's.
# (offset, code slot): offsets 2 and 3 share a slot (see seed_operand_heads).
OPERAND_HEADS = ((2, 0), (3, 0), (4, 1))
OPERAND_TOKENS = tuple("0123456789") + ("+", "-")
OPERAND_DIMS = 4  # a digit on a circle (cos, sin), its magnitude, and the sign: +1 for "+", -1 for "-"
OPERAND_GAIN = 3.0  # q_norm/k_norm gain: ~0.99 of each head's attention on its offset at step 0
OPERAND_SCALE = 3.0  # operand code size beside unit-RMS token codes (one-hot codes at 1.5 learnt math ~half as fast)


def operand_codes() -> torch.Tensor:
    """One row per OPERAND_TOKENS entry: the digits on a circle with their magnitude, then the two signs.

    >>> [round(x, 2) + 0.0 for x in operand_codes()[5].tolist()]
    [-1.0, 0.0, 0.11, 0.0]
    >>> operand_codes()[10].tolist(), operand_codes()[11].tolist()
    ([0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, -1.0])
    """
    codes = torch.zeros(len(OPERAND_TOKENS), OPERAND_DIMS)
    for d in range(10):
        codes[d, :3] = torch.tensor([math.cos(2 * math.pi * d / 10), math.sin(2 * math.pi * d / 10), d / 4.5 - 1])
    codes[10, 3], codes[11, 3] = 1.0, -1.0
    return codes


def operand_token_ids(tokenizer) -> list[int]:
    """Ids of the ten digits and the two signs, each of which must be one token."""
    ids = []
    for text in OPERAND_TOKENS:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise BarkitError(f"operand heads: {text!r} is {len(encoded)} tokens in this tokenizer, not one")
        ids.append(encoded[0])
    return ids


@torch.no_grad()
def seed_operand_heads(model, tokenizer, positions: int = 128) -> dict:
    """Wire heads 1-3 of layer 0 to look 2, 3 and 4 tokens back and write which digit or sign sits there.

    Real anchors line up the operands of a sum; at the quick world's size the base does not learn to in its
    pretraining budget, so the math expert memorised its training problems and solved 2-12% of unseen ones
    (docs/results.md). With these heads an expert FFN sees both operands' digits at every result digit and
    learns the digit table. Call after `seed_copy_circuit`: the last OPERAND_DIMS dimensions of its token codes
    become the operand code (`operand_codes`, zero for every other token, whose codes keep unit RMS in the
    rest), the heads copy those dimensions into the free part of its constant block, and lm_head is rewired
    to the new codes. Every other token writes exactly nothing there. Offsets 2 and 3 share one slot: at a
    result digit one of them holds a sign and the other a digit, whose entries are disjoint.
    """
    config = model.config
    heads = config.num_attention_heads
    hd = config.hidden_size // heads
    const = hd
    if heads < 1 + len(OPERAND_HEADS) or hd < 1 + 2 * OPERAND_DIMS:
        raise BarkitError(f"operand heads: need >= {1 + len(OPERAND_HEADS)} heads of >= {1 + 2 * OPERAND_DIMS} "
                          f"dims; got {heads} of {hd}")
    embed = model.model.embed_tokens.weight
    if not torch.all(embed[:, const] == CONSTANT_VALUE):
        raise BarkitError("operand heads: seed the copy circuit first (they read its token codes)")
    ids = operand_token_ids(tokenizer)
    reserved = slice(hd - OPERAND_DIMS, hd)
    codes = embed[:, :hd].clone()
    codes[:, reserved] = 0.0
    codes = _unit_rms(codes)
    codes[ids, reserved] = OPERAND_SCALE * operand_codes()
    _write_token_codes(model, codes)
    freqs = rope_frequencies(hd, config.rope_parameters["rope_theta"])
    attn = model.model.layers[0].self_attn
    pairs = {}
    for head, (offset, slot) in enumerate(OPERAND_HEADS, start=1):
        pairs[offset] = offset_pairs(freqs, positions, offset)
        _look_back(attn, head, offset, pairs[offset], freqs, const)
        attn.v_proj.weight[head * hd: head * hd + OPERAND_DIMS, reserved] = torch.eye(OPERAND_DIMS)
        start = const + 1 + slot * OPERAND_DIMS
        attn.o_proj.weight[start:start + OPERAND_DIMS, head * hd: head * hd + OPERAND_DIMS] = torch.eye(OPERAND_DIMS)
        attn.q_norm.weight[head * hd:(head + 1) * hd] = OPERAND_GAIN
        attn.k_norm.weight[head * hd:(head + 1) * hd] = OPERAND_GAIN
    return {"operand_offsets": [offset for offset, _ in OPERAND_HEADS],
            "operand_pairs": {k: list(v) for k, v in pairs.items()}}
