import json
from pathlib import Path

import pytest
import torch

from barkit import verify
from barkit.arch import ROLES, spec_for_moe
from barkit.branch import BranchConfig, branch
from barkit.checkpoint import CheckpointReader
from barkit.cli import main
from barkit.compose import ComposeConfig, compose
from barkit.errors import BarkitError
from barkit.select import SelectConfig, load_selected, mask_experts, select
from barkit.tiny import make_dense_checkpoint, save_like

FAMILIES = ("olmo2", "llama")
NAMES = ["anchor", "x0", "x1", "x2"]


def _domain(src_dir: Path, out: Path, seed: int) -> Path:
    """A 'trained' domain checkpoint: expert 1 and router row 1 perturbed, expert 0 untouched."""
    src = CheckpointReader(src_dir)
    spec = spec_for_moe(src.config["model_type"])
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for key in src.keys():
        t, parsed = src.get(key), spec.parse_expert_key(key)
        if spec.parse_router_key(key) is not None:
            t[1] = torch.randn(t.shape[1], generator=gen) * 0.5  # strong routing differences
        elif parsed is not None and parsed[2] == 1:
            t = t + torch.randn(t.shape, generator=gen) * 0.05
        tensors[key] = t.contiguous()
    return save_like(src_dir, tensors, out)


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """{family: 4-expert composed MoE (anchor, x0, x1, x2), top-k = all, no renormalisation}."""
    out = {}
    for family in FAMILIES:
        root = tmp_path_factory.mktemp(f"select-{family}")
        anchor = make_dense_checkpoint(root / "anchor", family, seed=0)
        base = make_dense_checkpoint(root / "base", family, seed=1)
        branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(root / "branch")))
        doms = [_domain(root / "branch", root / f"d{i}", 20 + i) for i in range(3)]
        compose(ComposeConfig(anchor=str(root / "branch"), experts=[f"x{i}={d}" for i, d in enumerate(doms)],
                              out=str(root / "moe"), verify="keys"))
        out[family] = root / "moe"
    return out


def _select(composed, family, tmp_path, keep, **kw):
    return select(SelectConfig(model=str(composed[family]), keep=keep, out=str(tmp_path / "sel"), **kw))


@pytest.mark.parametrize("family", FAMILIES)
def test_select_keeps_exactly_the_kept_experts(tmp_path, composed, family):
    src = CheckpointReader(composed[family])
    out = CheckpointReader(_select(composed, family, tmp_path, ["x2", "x0"]))
    spec = spec_for_moe(src.config["model_type"])
    kept = [0, 1, 3]  # anchor, x0, x2 in their original order
    shared = [k for k in src.keys() if spec.parse_expert_key(k) is None and spec.parse_router_key(k) is None]
    assert set(out.keys()) == spec.moe_keys(set(shared), 2, 3)
    for key in shared:
        assert torch.equal(out.get(key), src.get(key))
    for layer in range(2):
        assert torch.equal(out.get(spec.router_key(layer)), src.get(spec.router_key(layer))[kept])
        for role in ROLES:
            for new, old in enumerate(kept):
                assert torch.equal(out.get(spec.expert_key(role, layer, new)),
                                   src.get(spec.expert_key(role, layer, old)))
            excluded = src.get(spec.expert_key(role, layer, 2))
            assert not any(torch.equal(out.get(spec.expert_key(role, layer, e)), excluded) for e in range(3))
    assert out.config["barkit_expert_names"] == ["anchor", "x0", "x2"]
    assert out.config["num_experts_per_tok"] == 3  # clamped from 4
    assert json.loads((out.path / "barkit_manifest.json").read_text())["selected_from"] == kept


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("keep,drop_anchor,dropped", [(["x0", "x2"], False, [2]), (["x1"], True, [0, 1, 3])])
def test_select_equals_full_model_with_excluded_logits_at_minus_inf(tmp_path, composed, family, keep,
                                                                  drop_anchor, dropped):
    out = _select(composed, family, tmp_path, keep, drop_anchor=drop_anchor, verify="keys")
    small, full = verify.load_strict(out), verify.load_strict(composed[family])
    ids = torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        unmasked = full(ids).logits
        with mask_experts(full, dropped):
            masked = full(ids).logits
        selected = small(ids).logits
        after = full(ids).logits
    assert (selected - masked).abs().max().item() <= 1e-6
    assert (unmasked - masked).abs().max().item() > 1e-3  # the excluded experts mattered
    assert torch.equal(after, unmasked)  # leaving the block removed the hooks


@pytest.mark.parametrize("family", FAMILIES)
def test_load_selected_matches_the_written_selection(tmp_path, composed, family):
    written = verify.load_strict(_select(composed, family, tmp_path, ["x1"], verify="keys"))
    loaded = load_selected(composed[family], ["x1"])
    assert type(loaded) is type(written)
    assert loaded.config.barkit_expert_names == ["anchor", "x1"]
    written_sd = written.state_dict()
    assert set(loaded.state_dict()) == set(written_sd)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, written_sd[key]), key
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, written(ids).logits)


def test_select_top_k_and_norm(tmp_path, composed):
    out = _select(composed, "olmo2", tmp_path, ["x0", "x1"], top_k=1, verify="full")
    config = json.loads((out / "config.json").read_text())
    assert (config["num_experts_per_tok"], config["norm_topk_prob"], config["num_experts"]) == (1, False, 3)


def test_select_errors(tmp_path, composed, capsys):
    moe = str(composed["olmo2"])
    cases = [
        (["--keep", "x0,nope"], "no expert named 'nope' (experts: anchor, x0, x1, x2)"),
        (["--keep", "x0,x0"], "duplicate expert names"),
        (["--keep", "anchor", "--drop-anchor", "true"], "lists 'anchor' but drop_anchor is set"),
        (["--keep", "x0", "--top-k", "3"], "'top_k': 3 exceeds the 2 kept experts"),
    ]
    for args, needle in cases:
        code = main(["select", "--model", moe, *args, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and needle in err, err
        assert not (tmp_path / "out").exists()
    with pytest.raises(BarkitError, match="keeps no expert"):
        _select(composed, "olmo2", tmp_path, [], drop_anchor=True)
    with pytest.raises(BarkitError, match="cannot drop every expert"):
        mask_experts(verify.load_strict(composed["olmo2"]), [0, 1, 2, 3])
    assert main(["select", "--model", moe, "--keep", "x2", "--out", str(tmp_path / "ok")]) == 0
    assert CheckpointReader(tmp_path / "ok").config["barkit_expert_names"] == ["anchor", "x2"]
