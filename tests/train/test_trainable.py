"""Trainable-set declarations: aliases and globs resolve to exact tensors/rows; the anchor is protected."""

import pytest
import torch

from barkit.arch import ARCHITECTURES
from barkit.errors import BarkitError
from barkit.train import trainable
from barkit.verify import load_strict

LAYERS = (0, 1)


@pytest.fixture(scope="module")
def moe(moe_ckpts):
    return load_strict(moe_ckpts["olmo2"])


def _plan(model, declared, stage="sft", allow=False):
    return trainable.build_plan(model, declared, ARCHITECTURES["olmo2"], 2, stage, allow)


def _fused(layer):
    return [f"model.layers.{layer}.mlp.experts.gate_up_proj", f"model.layers.{layer}.mlp.experts.down_proj",
            f"model.layers.{layer}.mlp.gate.weight"]


def test_bar_sft_set(moe):
    plan = _plan(moe, ["expert:1", "router:1", "embeddings", "lm_head"])
    assert sorted(plan.full) == ["lm_head.weight", "model.embed_tokens.weight"]
    assert plan.partial == {name: [1] for layer in LAYERS for name in _fused(layer)}
    assert len(plan.frozen) == len(list(moe.parameters())) - 2 - 6
    assert trainable.count(plan, moe) == (2 * (128 * 32 + 32 * 64 + 32) + 2 * 300 * 32, 50304)
    text = trainable.table(plan, moe)
    assert "model.layers.*.mlp.experts.gate_up_proj  rows [1] of 2" in text
    assert text.endswith("total: 31,552 of 50,304 (62.7%)")


def test_rl_set_is_everything_but_the_anchor(moe):
    plan = _plan(moe, ["expert:1", "router:1", "embeddings", "lm_head", "attention", "norms"], stage="rl")
    assert plan.frozen == []
    assert set(plan.partial) == {name for layer in LAYERS for name in _fused(layer)}


def test_raw_glob_with_rows_and_anchor_opt_in(moe):
    plan = _plan(moe, ["model.layers.0.mlp.gate.weight[1]"])
    assert plan.full == [] and plan.partial == {"model.layers.0.mlp.gate.weight": [1]}
    with pytest.raises(BarkitError, match="'model.layers.0.mlp.gate.weight\\[0\\]' touches the anchor"):
        _plan(moe, ["model.layers.0.mlp.gate.weight[0]"])
    plan = _plan(moe, ["expert:0", "expert:1"], allow=True)
    assert set(plan.full) == {n for layer in LAYERS for n in _fused(layer)[:2]}


def test_router_training_retrains_row_zero_but_not_expert_zero(moe):
    plan = _plan(moe, ["router"], stage="router")
    assert sorted(plan.full) == ["model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"]
    with pytest.raises(BarkitError, match="'experts' touches the anchor"):
        _plan(moe, ["experts"], stage="router")


def test_dense_models_have_no_expert_aliases(dense_ckpts):
    dense = load_strict(dense_ckpts["olmo2"][0])
    plan = trainable.build_plan(dense, ["all"], None, 0, "pretrain", False)
    assert plan.frozen == [] and plan.partial == {}
    with pytest.raises(BarkitError, match="'router:1' needs a mixture-of-experts model"):
        trainable.build_plan(dense, ["router:1"], None, 0, "sft", False)


def test_frozen_rows_are_fingerprinted(moe_ckpts):
    model = load_strict(moe_ckpts["olmo2"])
    plan = _plan(model, ["expert:1", "router:1"])
    trainable.apply(plan, model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(plan.partial)
    before = trainable.frozen_fingerprint(plan, model)
    gate = model.model.layers[0].mlp.gate.weight
    with torch.no_grad():
        gate[1] += 1.0  # a trainable row: the fingerprint ignores it
    assert trainable.frozen_fingerprint(plan, model) == before
    with torch.no_grad():
        gate[0] += 1.0  # a frozen row: detected
    assert trainable.frozen_fingerprint(plan, model) != before


@pytest.mark.parametrize("family", ["olmo2", "llama"])
def test_split_anchor_rows_keep_logits_and_stay_out_of_autograd_and_the_optimizer(moe_ckpts, family):
    """The anchor's rows become a tensor of their own: logits bit-identical to the fused model, no gradient
    for them, AdamW state of exactly 2 x the trainable elements, and after a step and `fuse_rows` the stock
    parameter names are back with the anchor's bytes unchanged and the trainable rows moved."""
    from barkit.train.optim import build_optimizer
    from barkit.train.stages import OptimConfig, StageConfig

    model = load_strict(moe_ckpts[family])
    spec = ARCHITECTURES[family]
    plan = trainable.build_plan(model, ["expert:1", "router:1", "lm_head"], spec, 2, "sft", False)
    trainable.apply(plan, model)
    before, names = trainable.frozen_fingerprint(plan, model), [n for n, _ in model.named_parameters()]
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    reference = model(ids).logits.detach()
    trainable.split_rows(plan, model, master_dtype=torch.float32)
    logits = model(ids).logits
    assert torch.equal(logits, reference)
    logits.float().pow(2).mean().backward()
    params = dict(model.named_parameters())
    frozen_pieces = [n for n in params if n.endswith("original0")]
    assert len(frozen_pieces) == len(plan.partial) == 3 * 2  # gate_up, down, router per layer
    assert all(params[n].grad is None and not params[n].requires_grad for n in frozen_pieces)
    cfg = StageConfig(stage="sft", model="m", data=["d"], out="o", optim=OptimConfig(lr=1e-2)).resolve()
    optimizer = build_optimizer(model, cfg, spec)
    optimizer.step()
    state = sum(t.numel() for s in optimizer.state.values() for k, t in s.items() if k != "step")
    assert state == 2 * sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable.fuse_rows(model)
    assert sorted(n for n, _ in model.named_parameters()) == sorted(names)
    assert trainable.frozen_fingerprint(plan, model) == before
    assert trainable.count(plan, model)[0] * 2 == state
    expert = _fused(0)[0]
    after = dict(model.named_parameters())
    assert torch.equal(after[expert][0], snapshot[expert][0]) and not torch.equal(after[expert][1],
                                                                                  snapshot[expert][1])


def test_split_handles_frozen_rows_on_both_sides():
    """Expert 1 of 3 trainable: frozen rows 0 and 2 surround it; the presented tensor keeps the row order."""
    from transformers import AutoModelForCausalLM, FlexOlmoConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(FlexOlmoConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_experts=3, num_experts_per_tok=3, pad_token_id=0, eos_token_id=1))
    plan = trainable.build_plan(model, ["expert:1"], ARCHITECTURES["olmo2"], 3, "sft", False)
    trainable.apply(plan, model)
    ids = torch.randint(0, 64, (1, 8))
    reference = model(ids).logits.detach()
    trainable.split_rows(plan, model)
    assert torch.equal(model(ids).logits, reference)
    trainable.fuse_rows(model)
    assert torch.equal(model(ids).logits, reference)
