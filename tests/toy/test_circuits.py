"""The seeded copy circuit: at step 0 the model repeats a random sequence it has seen once in its context."""

import pytest
import torch
from transformers import Olmo2Config, Olmo2ForCausalLM

from barkit.errors import BarkitError
from barkit.toy.world.circuits import OPERAND_DIMS, OPERAND_SCALE, operand_codes, seed_copy_circuit, seed_operand_heads

VOCAB = 300


def tiny_olmo(heads: int = 4, theta: float = 500000.0) -> Olmo2ForCausalLM:
    torch.manual_seed(0)
    config = Olmo2Config(vocab_size=VOCAB, hidden_size=128, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=256,
                         pad_token_id=1, eos_token_id=0, bos_token_id=None, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": theta})
    config._attn_implementation = "eager"  # so attention weights can be read back
    return Olmo2ForCausalLM(config).eval()


def repeat_accuracy(model: Olmo2ForCausalLM, length: int = 30, rows: int = 8) -> float:
    """Greedy accuracy on the second copy of `length` distinct random tokens (first token of the copy excluded:
    nothing in the context predicts it); distinct, so the next token is never ambiguous."""
    gen = torch.Generator().manual_seed(1)
    seq = torch.stack([torch.randperm(VOCAB - 2, generator=gen)[:length] + 2 for _ in range(rows)])
    x = torch.cat([torch.zeros(rows, 1, dtype=torch.long), seq, seq], dim=1)
    with torch.no_grad():
        pred = model(x).logits.argmax(-1)
    # position p predicts x[p + 1]; the copy's second token is x[length + 2]
    return (pred[:, length + 1:-1] == x[:, length + 2:]).float().mean().item()


def test_seeded_model_copies_and_unseeded_does_not():
    plain = tiny_olmo()
    assert repeat_accuracy(plain) < 0.05
    seeded = tiny_olmo()
    info = seed_copy_circuit(seeded, seed=0)
    assert repeat_accuracy(seeded) > 0.95
    assert info["previous_token_pairs"] and len(info["match_pairs"]) >= 4


def test_layer0_head0_attends_to_the_previous_token():
    model = tiny_olmo()
    seed_copy_circuit(model, seed=0)
    x = torch.randint(2, VOCAB, (1, 100), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        attn = model(x, output_attentions=True).attentions[0][0, 0]  # layer 0, batch 0, head 0: [query, key]
    assert torch.equal(attn[1:].argmax(-1), torch.arange(99))
    assert attn[1:].max(-1).values.min() > 0.9


def test_same_seed_same_weights_other_seed_other_codes():
    a, b, c = tiny_olmo(), tiny_olmo(), tiny_olmo()
    seed_copy_circuit(a, seed=0)
    seed_copy_circuit(b, seed=0)
    seed_copy_circuit(c, seed=1)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


@pytest.mark.parametrize("heads,theta,match", [(2, 500000.0, "4 heads"), (4, 100.0, "rope_theta 100 too small")])
def test_shapes_that_cannot_hold_the_circuit_are_refused(heads, theta, match):
    with pytest.raises(BarkitError, match=match):
        seed_copy_circuit(tiny_olmo(heads=heads, theta=theta), seed=0)


class DigitTokenizer:
    """Ids 10-19 for the digits, 20 and 21 for the signs; anything else is two tokens."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        table = {**{str(d): 10 + d for d in range(10)}, "+": 20, "-": 21}
        return [table[text]] if text in table else [2, 3]


def _layer0_attention_output(model, x):
    """Layer 0's attention output per position (what its heads add to the residual stream, before the norm)."""
    hidden = model.model.embed_tokens(x)
    positions = torch.arange(x.shape[1])[None]
    mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1)[None, None]
    return model.model.layers[0].self_attn(hidden, position_embeddings=model.model.rotary_emb(hidden, positions),
                                           attention_mask=mask)[0][0]


def test_operand_heads_write_the_digit_or_sign_2_3_and_4_tokens_back():
    model = tiny_olmo()
    seed_copy_circuit(model, seed=0)
    info = seed_operand_heads(model, DigitTokenizer())
    assert info["operand_offsets"] == [2, 3, 4]
    hd, n = 32, OPERAND_DIMS
    x = torch.tensor([[0, 40, 12, 13, 20, 15, 50]])  # "23+5=": at "=", offset 4 is "2", 3 is "3", 2 is "+"
    with torch.no_grad():
        attn = model(x, output_attentions=True).attentions[0][0]  # layer 0: [head, query, key]
        for head, offset in ((1, 2), (2, 3), (3, 4)):
            assert attn[head, 6, 6 - offset] > 0.9, (head, offset)
        written = _layer0_attention_output(model, x)[6]
        # offsets 2 and 3 share slot 0: the sign "+" and the digit 3; offset 4's slot: the digit 2
        codes = OPERAND_SCALE * operand_codes()
        assert torch.allclose(written[hd + 1:hd + 1 + n], codes[3] + codes[10], atol=0.1)
        assert torch.allclose(written[hd + 1 + n:hd + 1 + 2 * n], codes[2], atol=0.1)
        # where no operand is 2-4 tokens back, the heads write exactly nothing
        quiet = _layer0_attention_output(model, torch.tensor([[0, 40, 41, 42, 43, 44, 45]]))[6]
        assert quiet[hd + 1:hd + 1 + 2 * n].abs().max() < 1e-6
    assert repeat_accuracy(model) > 0.95  # the copy circuit still copies with the rewired codes


def test_operand_heads_need_the_copy_circuit_and_single_token_digits():
    with pytest.raises(BarkitError, match="copy circuit first"):
        seed_operand_heads(tiny_olmo(), DigitTokenizer())
    model = tiny_olmo()
    seed_copy_circuit(model, seed=0)

    class SplitsDigits(DigitTokenizer):
        def encode(self, text, add_special_tokens=False):
            return [4, 5] if text == "7" else super().encode(text)

    with pytest.raises(BarkitError, match="'7' is 2 tokens"):
        seed_operand_heads(model, SplitsDigits())
