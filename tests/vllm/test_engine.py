"""vLLM generates what HF generates, on barkit's outputs of every family, and takes new weights exactly."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from barkit.arch import ARCHITECTURES
from barkit.vllm_engine import VLLMEngine, checkpoint_tensors, layer_closure, push_trainable

FAMILIES = ["olmo2-dense", "flexolmo-2x", "flexolmo-5x", "mixtral-2x", "qwen3moe-2x"]
STOPS = [0, 5]  # the tiny tokenizer's <|endoftext|> and <|end|>
NEW = 12
LOGP_TOL = 1e-4  # fp32: the engine's and HF's log-probabilities of the same tokens


def _load(path):
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _engine_greedy(engine, prompts):
    return [(s[0].token_ids, s[0].logprobs) for s in engine.generate(prompts, max_new_tokens=NEW, stop_ids=STOPS)]


def _assert_same(hf, engine):
    """Token for token, and log-probabilities within LOGP_TOL."""
    assert [t for t, _ in engine] == [t for t, _ in hf]
    worst = max(abs(a - b) for (_, la), (_, lb) in zip(hf, engine) for a, b in zip(la, lb))
    assert worst < LOGP_TOL, worst


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_tokens_and_logprobs_equal_hf(family_ckpts, prompts, hf_greedy, name):
    path = family_ckpts[name]
    hf = hf_greedy(_load(path), prompts, NEW, STOPS)
    engine = VLLMEngine(path, max_model_len=128)
    try:
        _assert_same(hf, _engine_greedy(engine, prompts))
    finally:
        engine.close()


@pytest.mark.parametrize("name,spec", [("flexolmo-5x", "olmo2"), ("mixtral-2x", "llama"), ("qwen3moe-2x", "qwen3")])
def test_pushed_weights_replace_the_engines_exactly_twice_in_a_row(family_ckpts, prompts, hf_greedy, name, spec):
    """What training changes (every expert but the anchor's, routers, attention) pushed twice; the engine then
    answers as HF does with the new weights. The anchor's expert tensors are never sent."""
    path = family_ckpts[name]
    model, engine = _load(path), VLLMEngine(path, max_model_len=128)
    expert_key = ARCHITECTURES[spec].parse_expert_key
    sent: list[str] = []
    push = engine.push
    engine.push = lambda tensors: (sent.extend(tensors), push(tensors))[1]
    try:
        for round_ in range(2):
            params = dict(model.named_parameters())
            trainable = [n for n in params if ".mlp." in n or ".self_attn." in n or "block_sparse_moe" in n]
            with torch.no_grad():
                gen = torch.Generator().manual_seed(round_)
                for n in trainable:
                    noise = torch.randn(params[n].shape, generator=gen) * 0.2
                    if ".experts." in n:
                        noise[0] = 0  # the anchor's expert stays as it is
                    params[n].add_(noise)
            fused = {n: sorted({0}) for n in trainable if ".experts." in n}
            push_trainable(engine, model, trainable, {n: set(r) for n, r in fused.items()}, expert_key)
            _assert_same(hf_greedy(model, prompts, NEW, STOPS), _engine_greedy(engine, prompts))
        assert sent and not [k for k in sent if (p := expert_key(k)) is not None and p[2] == 0]
        assert any((p := expert_key(k)) is not None and p[2] == 1 for k in sent)
    finally:
        engine.close()


def test_a_dense_push_of_one_projection_is_completed_from_the_checkpoint(family_ckpts, prompts, hf_greedy):
    """vLLM fuses q, k and v into one tensor: pushing q alone works because the worker reads k and v (and the
    layer's other tensors) from the checkpoint the engine started from."""
    path = family_ckpts["olmo2-dense"]
    model, engine = _load(path), VLLMEngine(path, max_model_len=128)
    try:
        name = "model.layers.1.self_attn.q_proj.weight"
        with torch.no_grad():
            dict(model.named_parameters())[name].mul_(-3.0)
        engine.push(checkpoint_tensors(model, {name: dict(model.named_parameters())[name].detach()}))
        _assert_same(hf_greedy(model, prompts, NEW, STOPS), _engine_greedy(engine, prompts))
    finally:
        engine.close()


def test_layer_closure_covers_whole_layers():
    names = [f"model.layers.{i}.{t}" for i in range(2) for t in ("a.weight", "b.weight")] + ["lm_head.weight"]
    assert layer_closure(["model.layers.0.a.weight", "lm_head.weight"], names) == [
        "lm_head.weight", "model.layers.0.a.weight", "model.layers.0.b.weight"]


def test_sampling_logprobs_are_the_engines_and_finite(family_ckpts, prompts):
    engine = VLLMEngine(family_ckpts["flexolmo-2x"], max_model_len=128)
    try:
        out = engine.generate(prompts[:2], n=4, greedy=False, max_new_tokens=6, temperature=1.0, stop_ids=STOPS)
        assert [len(o) for o in out] == [4, 4]
        assert all(len(s.logprobs) == len(s.token_ids) and all(math.isfinite(x) and x <= 0 for x in s.logprobs)
                   for o in out for s in o)
    finally:
        engine.close()
