import json

import pytest
import torch

from barkit.arch import ROLES, spec_for_moe
from barkit.branch import BranchConfig, branch
from barkit.checkpoint import CheckpointReader
from barkit.compose import ComposeConfig, compose
from barkit.errors import BarkitError
from barkit.route import RouteConfig, UpgradeConfig, train_router, upgrade
from barkit.tiny import make_dense_checkpoint
from barkit.train import DistributedConfig, MixtureConfig, OptimConfig


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """anchor + two 'domain' experts (branches with different bases), composed into a 3-expert MoE."""
    root = tmp_path_factory.mktemp("route")
    anchor = make_dense_checkpoint(root / "anchor", "olmo2", seed=0)
    domains = {}
    for i, name in enumerate(("math", "code", "code_v2"), start=1):
        base = make_dense_checkpoint(root / f"base{i}", "olmo2", seed=i)
        domains[name] = branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(root / name), seed=i))
    moe = compose(ComposeConfig(anchor=str(domains["math"]), experts=[f"math={domains['math']}",
                                                                         f"code={domains['code']}"],
                                out=str(root / "moe")))
    data = root / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f"a {i}"}]}
            for i in range(40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "moe": moe, "data": data, **domains}


def _router_keys(reader):
    spec = spec_for_moe(reader.config["model_type"])
    return {spec.router_key(layer) for layer in range(reader.config["num_hidden_layers"])}


def test_route_changes_only_router_and_honours_top_k(composed, tmp_path):
    out = tmp_path / "routed"
    train_router(RouteConfig(model=str(composed["moe"]), data=[str(composed["data"])], out=str(out),
                             mixture=MixtureConfig(sample_fraction=1.0), steps=3, optim=OptimConfig(lr=1e-2),
                             batch_size=4, top_k=2, progress=False))
    src, dst = CheckpointReader(composed["moe"]), CheckpointReader(out)
    routers = _router_keys(src)
    assert set(src.keys()) == set(dst.keys())
    for key in src.keys():
        same = torch.equal(src.get(key), dst.get(key))
        assert same != (key in routers), key
    assert dst.config["num_experts_per_tok"] == 2
    assert not (tmp_path / ".routed.topk").exists()


def test_upgrade_swaps_one_expert_and_retrains_router(composed, tmp_path):
    out = tmp_path / "upgraded"
    upgrade(UpgradeConfig(model=str(composed["moe"]), data=[str(composed["data"])], out=str(out),
                          replace=[f"code={composed['code_v2']}"], mixture=MixtureConfig(sample_fraction=1.0),
                          steps=2, optim=OptimConfig(lr=1e-2),
                          batch_size=4, progress=False))
    src, dst, new = CheckpointReader(composed["moe"]), CheckpointReader(out), CheckpointReader(composed["code_v2"])
    spec = spec_for_moe(src.config["model_type"])
    for layer in range(src.config["num_hidden_layers"]):
        for role in ROLES:
            for e in (0, 1):  # anchor and math untouched
                key = spec.expert_key(role, layer, e)
                assert torch.equal(dst.get(key), src.get(key))
            assert torch.equal(dst.get(spec.expert_key(role, layer, 2)), new.get(spec.expert_key(role, layer, 1)))
            assert not torch.equal(dst.get(spec.expert_key(role, layer, 2)), src.get(spec.expert_key(role, layer, 2)))
    assert dst.config["barkit_expert_names"] == ["anchor", "math", "code"]
    assert not list(tmp_path.glob(".upgraded.swapped*"))


def test_upgrade_refuses_unknown_expert_and_leaves_nothing(composed, tmp_path):
    with pytest.raises(BarkitError, match="tool"):
        upgrade(UpgradeConfig(model=str(composed["moe"]), data=[str(composed["data"])], out=str(tmp_path / "u"),
                              replace=[f"tool={composed['code_v2']}"], steps=1, progress=False))
    assert list(tmp_path.iterdir()) == []


def test_router_training_on_two_threads_is_bit_reproducible(tmp_path):
    """The experts' grouped_mm backward on CPU sums in a thread-dependent order (5 experts, 2 threads: the router
    gradients differed on 3 of 3 runs here); training runs with torch's deterministic algorithms by default, so
    the same run gives the same router twice."""
    anchor = make_dense_checkpoint(tmp_path / "anchor", "olmo2", seed=0)
    experts = []
    for i in range(1, 5):
        base = make_dense_checkpoint(tmp_path / f"base{i}", "olmo2", seed=i)
        experts.append(f"d{i}={branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(tmp_path / f'd{i}')))}")
    moe = compose(ComposeConfig(anchor=str(tmp_path / "d1"), experts=experts, out=str(tmp_path / "moe")))
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question number {i} " * 3},
                                                     {"role": "assistant", "content": f"answer {i} " * 3}]}) + "\n"
                            for i in range(32)))
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        train_router(RouteConfig(model=str(moe), data=[str(data)], out=str(out), steps=3, batch_size=8,
                                 mixture=MixtureConfig(sample_fraction=1.0), optim=OptimConfig(lr=1e-2),
                                 distributed=DistributedConfig(threads=2), progress=False))
        runs.append(CheckpointReader(out))
    changed = [k for k in _router_keys(runs[0]) if not torch.equal(runs[0].get(k), CheckpointReader(moe).get(k))]
    assert changed  # the router trained
    assert all(torch.equal(runs[0].get(k), runs[1].get(k)) for k in _router_keys(runs[0]))
