"""End to end: the smoke-profile demo runs every phase, keeps BAR's invariants, and resumes."""

import json
import re

import pytest
import torch

from barkit.arch import ROLES, spec_for_moe
from barkit.checkpoint import CheckpointReader
from barkit.toy.demo import MODEL_LABELS, DemoConfig, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    logs: list[str] = []
    summary = run_demo(DemoConfig(out=str(out), profile="smoke", progress=False), log=logs.append)
    return out, summary, logs


def test_demo_writes_the_bar_table_and_plots(demo):
    out, summary, _ = demo
    table, footer = (out / "table.md").read_text().split("\n\n", 1)
    table = table.splitlines()
    assert footer.startswith("CPU kernels: ATen ")  # which kernels produced the table (barkit/kernels.py)
    # every category says how many items it scored; every score carries one standard error
    assert re.fullmatch(r"\| Model \| Overall( \| (Know|Reas|Chat|Math|Code|Tool|Safety) \(n=\d+\)){7} \|", table[0])
    assert all(re.fullmatch(r"\| .+ \| [\d.]+ ± [\d.]+( \| [\d.]+ ± [\d.]+){7} \|", row) for row in table[2:]), table
    names = [line.split("|")[1].strip() for line in table[2:]]
    assert names == [MODEL_LABELS[k] for k in ("anchor", "math", "code", "tool_use", "safety", "composed", "moe")]
    for png in ("table.png", "routing.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    scores = summary["scores"][MODEL_LABELS["moe"]]
    assert set(scores) == {"overall", "knowledge", "reasoning", "chat", "math", "code", "tool_use", "safety"}
    routing = json.loads((out / "eval" / "bar-moe" / "results.json").read_text())["routing"]
    assert routing["experts"] == ["anchor", "math", "code", "tool_use", "safety"]


def test_demo_keeps_the_anchor_and_composes_experts_exactly(demo):
    out, _, _ = demo
    base = CheckpointReader(out / "bar-2x-base")
    moe = CheckpointReader(out / "bar-moe")
    spec = spec_for_moe(base.config["model_type"])
    finals = {"math": "rl", "code": "rl", "tool_use": "sft", "safety": "sft"}
    for i, (domain, stage) in enumerate(finals.items(), start=1):
        expert = CheckpointReader(out / "experts" / domain / stage)
        for layer in range(base.config["num_hidden_layers"]):
            assert torch.equal(expert.get(spec.router_key(layer))[0], base.get(spec.router_key(layer))[0])
            for role in ROLES:
                anchor_T = base.get(spec.expert_key(role, layer, 0))
                assert torch.equal(expert.get(spec.expert_key(role, layer, 0)), anchor_T)
                assert torch.equal(moe.get(spec.expert_key(role, layer, 0)), anchor_T)
                composed, trained = spec.expert_key(role, layer, i), spec.expert_key(role, layer, 1)
                assert torch.equal(moe.get(composed), expert.get(trained))


def test_demo_rerun_skips_every_step(demo):
    out, summary, _ = demo
    logs: list[str] = []
    again = run_demo(DemoConfig(out=str(out), profile="smoke", progress=False), log=logs.append)
    assert again["step_seconds"] == {}
    assert any("up to date" in line for line in logs)
    assert again["table"] == summary["table"]


def test_a_copied_demo_directory_is_up_to_date(demo, tmp_path):
    """Plans are hashed relative to the demo directory: a copy reruns nothing and gives the same table."""
    import shutil

    out, summary, _ = demo
    copy = tmp_path / "copied-run"
    shutil.copytree(out, copy, symlinks=True)
    again = run_demo(DemoConfig(out=str(copy), profile="smoke", progress=False), log=lambda _: None)
    assert again["step_seconds"] == {}
    assert again["table"] == summary["table"]


def test_redoing_a_step_redoes_the_steps_that_read_its_output(tmp_path):
    """A step's plan folds in the digests of the outputs it names: a changed upstream step invalidates them."""
    from barkit.toy.steps import Steps

    root = tmp_path / "run"
    ran: list[str] = []

    def make(path, tag):
        return lambda: (path.mkdir(exist_ok=True), ran.append(tag))

    def pipeline(router_steps: int) -> list[str]:
        ran.clear()
        steps = Steps(root, lambda _: None)
        model, evaluation, other = root / "moe", root / "eval-moe", root / "eval-anchor"
        steps.run("route", model, {"steps": router_steps}, make(model, "route"))
        steps.run("eval/moe", evaluation, {"model": str(model)}, make(evaluation, "eval/moe"))
        steps.run("eval/anchor", other, {"model": "world/anchor"}, make(other, "eval/anchor"))
        return list(ran)

    assert pipeline(100) == ["route", "eval/moe", "eval/anchor"]
    assert pipeline(100) == []
    assert pipeline(300) == ["route", "eval/moe"]


def test_a_reshaped_profile_rebuilds_its_world(tmp_path, monkeypatch):
    """The world step's plan holds the recipe's shape and budgets, not only the profile's name: a release that
    reshapes a profile must not branch a world built at the old shape (the branch would fail or be wrong)."""
    import dataclasses

    from barkit.toy import demo as demo_module
    from barkit.toy.recipe import get_recipe
    from barkit.toy.run import RunContext
    from barkit.toy.steps import Steps

    built: list[int] = []

    def fake_build(cfg, log):
        (tmp_path / "world" / "anchor").mkdir(parents=True, exist_ok=True)
        built.append(cfg.seed)

    monkeypatch.setattr(demo_module, "build_world", fake_build)
    smoke = get_recipe("smoke")
    reshaped = dataclasses.replace(smoke, shape=dataclasses.replace(smoke.shape, intermediate=96))
    cfg = demo_module.DemoConfig(out=str(tmp_path), profile="smoke", progress=False)
    for recipe in (smoke, smoke, reshaped, smoke, dataclasses.replace(smoke, router_fraction=0.5)):
        ctx = RunContext(world=tmp_path / "world", root=tmp_path, recipe=recipe, steps=Steps(tmp_path, lambda _: None))
        demo_module.build_world_step(ctx, cfg)
    # built, reused, rebuilt for the new shape, rebuilt at the old one; a router setting is not the world's
    assert len(built) == 3


def test_cosmetic_config_fields_do_not_redo_a_step(tmp_path):
    from barkit.toy.steps import Steps
    from barkit.train import DistributedConfig, StageConfig

    out, ran = tmp_path / "run" / "expert", []
    for progress, threads in ((True, None), (False, None), (False, 1)):  # threads sit in a section
        cfg = StageConfig(stage="sft", model="m", data=["d.jsonl"], out=str(out), progress=progress,
                          distributed=DistributedConfig(threads=threads))
        Steps(tmp_path / "run", lambda _: None).run("expert", out, {"cfg": cfg},
                                                    lambda: (out.mkdir(exist_ok=True), ran.append(progress)))
    assert ran == [True]


def test_a_new_setting_at_its_default_does_not_redo_a_step(tmp_path):
    """Plans leave out settings at their defaults: adding one (e.g. rl.dynamic_sampling) keeps finished work."""
    from dataclasses import field, make_dataclass

    from barkit.toy.steps import Steps

    before = make_dataclass("Cfg", [("lr", float, field(default=1e-3))])
    after = make_dataclass("Cfg", [("lr", float, field(default=1e-3)), ("new", bool, field(default=False)),
                                   ("items", list, field(default_factory=list))])
    out, ran = tmp_path / "run" / "expert", []

    def run(cfg) -> None:
        Steps(tmp_path / "run", lambda _: None).run("expert", out, {"cfg": cfg},
                                                    lambda: (out.mkdir(exist_ok=True), ran.append(cfg)))

    run(before(lr=2e-3))
    run(after(lr=2e-3))  # same plan: the new fields are at their defaults
    run(after(lr=2e-3, items=[]))
    assert len(ran) == 1
    run(after(lr=2e-3, new=True))  # a setting that differs from its default is part of the plan
    run(after(lr=1e-3))  # back at the default lr: a different plan from lr=2e-3 all the same
    assert len(ran) == 3


def test_experts_trained_side_by_side_equal_one_after_another(demo, tmp_path):
    from barkit.toy.demo import train_experts
    from barkit.toy.recipe import get_recipe
    from barkit.toy.run import RunContext, train_expert
    from barkit.toy.steps import Steps, Workers

    out, _, _ = demo
    recipe, world, base, domains = get_recipe("smoke"), out / "world", out / "bar-2x-base", ["tool_use", "safety"]
    side_root, one_root = tmp_path / "side", tmp_path / "one"
    side = Steps(side_root, lambda s: None)
    ctx = RunContext(world=world, root=side_root, recipe=recipe, steps=side, progress=False)
    with Workers(2) as workers:
        parallel = train_experts(ctx, base, domains, workers)
    threads = torch.get_num_threads()
    try:  # the workers' setting (1 thread each), in this process
        one = Steps(one_root, lambda s: None)
        one_ctx = RunContext(world=world, root=one_root, recipe=recipe, steps=one, progress=False, threads=1)
        serial = {d: train_expert(one_ctx, base, d) for d in domains}
    finally:
        torch.set_num_threads(threads)
    for d in domains:
        a, b = CheckpointReader(parallel[d]["sft"]), CheckpointReader(serial[d]["sft"])
        assert a.keys() == b.keys() and all(torch.equal(a.get(k), b.get(k)) for k in a.keys())
    assert set(side.timings) == {f"experts/{d}/sft" for d in domains}
    assert set(side.produced) == {str(side_root / "experts" / d / "sft") for d in domains}
    logs: list[str] = []  # the workers recorded the digests this process computes: a serial rerun redoes nothing
    again = Steps(side_root, logs.append)
    with Workers(1) as workers:
        train_experts(RunContext(world=world, root=side_root, recipe=recipe, steps=again, progress=False), base,
                      domains, workers)
    assert again.timings == {} and again.produced == side.produced
    assert logs == [f"[demo] experts/{d}/sft: up to date" for d in domains]


def test_experts_start_longest_first_with_rl_and_midtrain_rows_weighted():
    from barkit.toy.demo import _relative_cost
    from barkit.toy.recipe import get_recipe

    quick = get_recipe("quick")
    # code's RL rollouts put it ahead of safety's longer SFT: started before safety it ends 13 s earlier
    order = sorted(["safety", "code", "tool_use", "math"], key=lambda d: -_relative_cost(quick, d))
    assert order == ["math", "tool_use", "code", "safety"]
