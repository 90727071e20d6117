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


def test_frozen_rows_masked_restored_and_fingerprinted(moe_ckpts):
    model = load_strict(moe_ckpts["olmo2"])
    plan = _plan(model, ["expert:1", "router:1"])
    trainable.apply(plan, model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(plan.partial)
    before = trainable.frozen_fingerprint(plan, model)
    rows = trainable.FrozenRows(plan, model)
    gate = model.model.layers[0].mlp.gate.weight
    gate.grad = torch.ones_like(gate)
    rows.mask_grads()
    assert gate.grad[0].abs().sum() == 0 and torch.equal(gate.grad[1], torch.ones_like(gate[1]))
    with torch.no_grad():
        gate[1] += 1.0  # a trainable row: the fingerprint ignores it
    assert trainable.frozen_fingerprint(plan, model) == before
    with torch.no_grad():
        gate[0] += 1.0  # a frozen row (as weight decay would do): detected, then restored
    assert trainable.frozen_fingerprint(plan, model) != before
    rows.restore()
    assert trainable.frozen_fingerprint(plan, model) == before
