import torch
from transformers import AutoModelForCausalLM

from barkit.attribution import routing_weights, routing_weights_per_sequence
from barkit.branch import BranchConfig, branch
from barkit.tiny import tiny_tokenizer


def test_batched_per_sequence_routing_equals_one_sequence_at_a_time(tmp_path, dense_ckpts):
    anchor, _ = dense_ckpts["olmo2"]
    branch(BranchConfig(anchor=str(anchor), out=str(tmp_path / "moe")))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "moe"), dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # routers that depend on the token, so a shifted position would show
        for layer in model.model.layers:
            layer.mlp.gate.weight.copy_(torch.randn(layer.mlp.gate.weight.shape, generator=gen))
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    texts = ["the quick brown fox jumps over the lazy dog", "1 + 2 = 3", "def f(x): return x + 1 + 2"]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert len(set(enc["attention_mask"].sum(1).tolist())) == 3  # three lengths, so two are padded
    batched_BLE = routing_weights_per_sequence(model, enc["input_ids"], enc["attention_mask"])
    for i, text in enumerate(texts):
        alone = tok([text], return_tensors="pt", add_special_tokens=False)
        expected_LE = routing_weights(model, alone["input_ids"], alone["attention_mask"])
        torch.testing.assert_close(batched_BLE[i], expected_LE, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched_BLE[0], batched_BLE[1], atol=1e-3)
