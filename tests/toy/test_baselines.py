"""Baselines on one smoke world with two BAR experts (math: midtrain+sft+rl, safety: sft), built once."""

import dataclasses
import json

import pytest
import torch

from barkit.arch import ROLES, spec_for_dense, spec_for_moe
from barkit.checkpoint import CheckpointReader
from barkit.errors import BarkitError
from barkit.toy.baselines import (
    COST_COLUMN,
    COST_KEYS,
    add_domain_scenario,
    btx,
    chain_cost,
    continued_finetuning,
    cost_columns,
    dense_merge,
    plot_score_vs_cost,
    retrain,
    retrain_steps,
)
from barkit.toy.recipe import get_recipe
from barkit.toy.run import RunContext, train_expert
from barkit.toy.steps import Steps

DOMAINS = ["math", "safety"]


@pytest.fixture(scope="module")
def bar(tmp_path_factory):
    from barkit.branch import BranchConfig, branch
    from barkit.toy.world.build import WorldConfig, build_world

    root = tmp_path_factory.mktemp("baselines")
    # route supervision on: BAR's experts take it, the dense baselines' chains must drop it (no router)
    recipe = dataclasses.replace(get_recipe("smoke"), route_supervision=1.0)
    steps = Steps(root, lambda _: None)
    world = build_world(WorldConfig(out=str(root / "world"), profile="smoke", progress=False), log=lambda _: None)
    bar_base = branch(BranchConfig(anchor=str(world / "anchor"), base=str(world / "base"), out=str(root / "base2x")))
    ctx = RunContext(world=world, root=root, recipe=recipe, steps=steps, progress=False)
    finals = {d: list(train_expert(ctx, bar_base, d).values())[-1] for d in DOMAINS}
    ctx = dataclasses.replace(ctx, threads=1)
    out = root / "baselines"
    runs = {"merge": dense_merge(ctx, out, bar_base, finals),
            "cft": continued_finetuning(ctx, out, domains=DOMAINS),
            "retrain": retrain(ctx, out, domains=DOMAINS),
            "btx_frozen": btx(ctx, out, domains=DOMAINS, freeze_anchor=True)}
    frozen = {k: v.clone() for k, v in _all(runs["btx_frozen"][0]).items()}
    runs["btx"] = btx(ctx, out, domains=DOMAINS)  # only the fine-tune reruns
    return dict(root=root, world=world, bar_base=bar_base, finals=finals, recipe=recipe, runs=runs, steps=steps,
                btx_frozen=frozen, out=out, ctx=ctx)


def _manifest(path) -> dict:
    return json.loads((path / "barkit_manifest.json").read_text())


def _all(path) -> dict[str, torch.Tensor]:
    reader = CheckpointReader(path)
    return {k: reader.get(k) for k in reader.keys()}


def test_every_baseline_loads_with_transformers_and_has_a_positive_cost(bar):
    from transformers import AutoModelForCausalLM

    for name, (path, cost) in bar["runs"].items():
        model = AutoModelForCausalLM.from_pretrained(str(path))
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all(), name
        assert set(cost) == set(COST_KEYS) and all(cost[k] > 0 for k in COST_KEYS), (name, cost)
        assert cost["token_params"] >= cost["tokens"] * min(1, cost["trainable_params"])


def test_dense_merge_lambdas_follow_the_step_share_and_zero_lambdas_give_the_anchor(bar):
    manifest = json.loads((bar["runs"]["merge"][0] / "barkit_manifest.json").read_text())
    trained = {d: sum(_manifest(p)["steps"] for p in (bar["root"] / "experts" / d).iterdir()) for d in DOMAINS}
    total = sum(trained.values()) + _manifest(bar["world"] / "anchor")["steps"]
    assert trained["safety"] == 2 and trained["math"] >= 5  # smoke: safety sft; math midtrain + sft + rl
    assert manifest["lambdas"] == {d: trained[d] / total for d in DOMAINS}
    path, cost = dense_merge(bar["ctx"], bar["root"] / "zero", bar["bar_base"], bar["finals"],
                             lambdas={"math": 0.0, "safety": 0.0})
    anchor, merged = _all(bar["world"] / "anchor"), _all(path)
    assert merged.keys() == anchor.keys() and all(torch.equal(merged[k], anchor[k]) for k in anchor)
    assert cost == bar["runs"]["merge"][1]  # the experts' training, nothing new


def test_dense_merge_adds_exactly_one_task_vector(bar):
    path, _ = dense_merge(bar["ctx"], bar["root"] / "one", bar["bar_base"], bar["finals"],
                          lambdas={"math": 1.0, "safety": 0.0})
    folded = bar["out"] / "merge" / "folded"
    anchor, merged = _all(bar["world"] / "anchor"), _all(path)
    skill, pre = _all(folded / "math"), _all(folded / "pretrained")
    for key, a in anchor.items():
        expected = (a.double() + (skill[key].double() - pre[key].double())).to(a.dtype)
        assert torch.equal(merged[key], expected), key
    spec = spec_for_dense("olmo2")
    moe = CheckpointReader(bar["finals"]["math"])
    moe_spec = spec_for_moe(moe.config["model_type"])
    assert torch.equal(skill[spec.dense_key("down", 0)], moe.get(moe_spec.expert_key("down", 0, 1)))


def test_continued_finetuning_trains_every_parameter_through_every_stage(bar):
    path, cost = bar["runs"]["cft"]
    anchor, final = _all(bar["world"] / "anchor"), _all(path)
    assert all(not torch.equal(anchor[k], final[k]) for k in anchor)
    assert cost["runs"] == 4  # math midtrain, sft, rl; safety sft
    parent = json.loads((path / "barkit_manifest.json").read_text())["parents"]["model"]["path"]
    assert parent == str((bar["out"] / "cft" / "0-math" / "rl").resolve())
    assert path == bar["out"] / "cft" / "1-safety" / "sft"


def test_retrain_starts_from_the_base_with_the_summed_budget(bar):
    path, cost = bar["runs"]["retrain"]
    experts = {d: _manifest(bar["root"] / "experts" / d / "sft") for d in DOMAINS}
    examples = 4 * 8 + sum(m["steps"] * m["config"]["batch_size"] for m in experts.values())  # anchor SFT: 4 x 8
    mid_steps = _manifest(bar["root"] / "experts" / "math" / "midtrain")["steps"]
    assert retrain_steps(bar["recipe"], DOMAINS) == (mid_steps, examples // 8)
    manifest = _manifest(path)
    assert manifest["steps"] == examples // 8 and manifest["trainable"]["declared"] == ["all"]
    assert cost["runs"] == 2 and cost["trainable_params"] == manifest["trainable"]["total_params"]
    mid = json.loads((bar["out"] / "retrain" / "midtrain" / "barkit_manifest.json").read_text())
    assert mid["parents"]["model"]["path"] == str((bar["world"] / "base").resolve())


def test_btx_mixes_dense_domain_ffns_around_the_anchor(bar):
    frozen, anchor = bar["btx_frozen"], _all(bar["world"] / "anchor")
    dense_spec, composed = spec_for_dense("olmo2"), _all(bar["out"] / "btx" / "composed")
    moe_spec = spec_for_moe(CheckpointReader(bar["out"] / "btx" / "composed").config["model_type"])
    dense = {d: _all(bar["out"] / "btx" / "dense" / d / stage) for d, stage in (("math", "rl"), ("safety", "sft"))}
    config = json.loads((bar["runs"]["btx"][0] / "config.json").read_text())
    assert config["num_experts"] == 3 and config["barkit_expert_names"] == ["anchor", *DOMAINS]
    for layer in range(2):
        for role in ROLES:
            a = anchor[dense_spec.dense_key(role, layer)]
            assert torch.equal(frozen[moe_spec.expert_key(role, layer, 0)], a)
            for i, d in enumerate(DOMAINS, start=1):
                expert_T = composed[moe_spec.expert_key(role, layer, i)]
                assert torch.equal(expert_T, dense[d][dense_spec.dense_key(role, layer)])
    key = "model.embed_tokens.weight"
    expected = ((anchor[key].double() + dense["math"][key].double() + dense["safety"][key].double()) / 3).float()
    assert torch.equal(composed[key], expected)
    unfrozen = _all(bar["runs"]["btx"][0])
    assert not torch.equal(unfrozen[moe_spec.expert_key("down", 0, 0)], anchor[dense_spec.dense_key("down", 0)])
    # cost: the dense domain chains (4 runs) plus the fine-tune of the whole MoE
    assert bar["runs"]["btx"][1]["runs"] == 5
    assert bar["runs"]["btx"][1]["trainable_params"] == sum(t.numel() for t in unfrozen.values())


def test_bar_cost_and_lineage_errors(bar):
    expert_cost = chain_cost(bar["finals"]["math"], bar["bar_base"])
    assert expert_cost["runs"] == 3
    with pytest.raises(BarkitError, match="lineage reaches"):
        chain_cost(bar["finals"]["math"], bar["world"] / "anchor")
    assert bar["runs"]["merge"][1]["runs"] == 4


def test_add_domain_scenario_is_linear_for_bar_and_repeats_retraining():
    recipe = get_recipe("smoke")
    unit = {"tokens": 1, "trainable_params": 1, "wall_s": 1.0, "runs": 1}
    experts = {"tool_use": {**unit, "token_params": 10.0}, "safety": {**unit, "token_params": 4.0}}
    router = {**unit, "token_params": 1.0}
    out = add_domain_scenario(experts, router, {**unit, "token_params": 100.0}, recipe)
    assert out["bar"] == {"now": 15.0, "after": 20.0}
    # retraining on tool use, safety and one more safety-like domain: SFT steps (4*8 + 3*2*8) / (4*8 + 2*2*8)
    # = 10 / 8 of the first run again
    assert out["retrain"] == {"now": 100.0, "after": pytest.approx(225.0)}
    with pytest.raises(BarkitError, match="like"):
        add_domain_scenario(experts, router, router, recipe, like="math")


def test_plot_and_cost_columns(tmp_path):
    results = {"A": {"overall": 40.0}, "B": {"overall": 55.0}, "C": {"overall": 1.0}}
    costs = {"A": {"token_params": 2.5e9}, "B": {"token_params": 0.0}}
    assert plot_score_vs_cost(results, costs, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert cost_columns(costs) == {"A": {COST_COLUMN: "2.50e+09"}, "B": {COST_COLUMN: "0.00e+00"}}
    with pytest.raises(BarkitError):
        plot_score_vs_cost(results, {}, tmp_path / "q.png")


def test_run_baseline_config_writes_the_cost_next_to_the_model(bar, tmp_path):
    from barkit.toy.baselines import BaselineConfig, run_baseline

    cfg = BaselineConfig(method="retrain", world=str(bar["world"]), out=str(tmp_path), profile="smoke",
                         domains=["safety"], midtrain=False, threads=1, progress=False)
    path, cost = run_baseline(cfg, log=lambda _: None)
    assert path == tmp_path / "retrain" / "sft" and cost["runs"] == 1
    manifest = json.loads((path / "barkit_manifest.json").read_text())
    assert manifest["steps"] == 6  # (4*8 + 2*8) / 8
    assert json.loads((tmp_path / "retrain" / "cost.json").read_text()) == {"model": str(path), **cost}
    with pytest.raises(BarkitError, match="bar_base"):
        run_baseline(BaselineConfig(method="merge", world=str(bar["world"]), out=str(tmp_path)))
