import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig

from barkit import verify
from barkit.arch import ROLES, spec_for_moe
from barkit.branch import BranchConfig, branch
from barkit.checkpoint import CheckpointReader
from barkit.cli import main
from barkit.compose import ComposeConfig, compose, replace_expert
from barkit.errors import BarkitError
from barkit.select import mask_experts
from barkit.tiny import make_dense_checkpoint, save_like

FAMILIES = ("olmo2", "llama", "qwen2", "qwen3")


def fake_train(src_dir: Path, out: Path, seed: int, touch_expert0: bool = False) -> Path:
    """Stand-in for domain training: perturb expert 1, router row 1 and the shared tensors (as RL would)."""
    src = CheckpointReader(src_dir)
    spec = spec_for_moe(src.config["model_type"])
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for key in src.keys():
        t, parsed = src.get(key), spec.parse_expert_key(key)
        if spec.parse_router_key(key) is not None:
            t[1] += torch.randn(t.shape[1], generator=gen).to(t.dtype) * 0.05
        elif parsed is None or parsed[2] == 1 or (touch_expert0 and parsed[1] == 1 and parsed[0] == "up"):
            t = t + (torch.randn(t.shape, generator=gen) * 0.01).to(t.dtype)
        tensors[key] = t.contiguous()
    return save_like(src_dir, tensors, out)


def _make_world(root: Path, family: str, dtype=torch.float32) -> dict:
    anchor = make_dense_checkpoint(root / "anchor", family, seed=0, dtype=dtype)
    base = make_dense_checkpoint(root / "base", family, seed=1, dtype=dtype)
    br = root / "branch"
    branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(br), seed=5))
    domains = [fake_train(br, root / f"d{i}", seed=10 + i) for i in range(3)]
    return {"anchor": anchor, "base": base, "branch": br, "domains": domains}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    return {f: _make_world(tmp_path_factory.mktemp(f"compose-{f}"), f) for f in FAMILIES}


def _compose(worlds, family, out, anchor="branch", **kw):
    w = worlds[family]
    experts = [f"x{i}={d}" for i, d in enumerate(w["domains"])]
    return compose(ComposeConfig(anchor=str(w[anchor]), experts=experts, out=str(out), **kw))


@pytest.mark.parametrize("family", FAMILIES)
def test_compose_tensors_are_as_specified(tmp_path, worlds, family):
    w = worlds[family]
    out = CheckpointReader(_compose(worlds, family, tmp_path / "moe"))
    br = CheckpointReader(w["branch"])
    doms = [CheckpointReader(d) for d in w["domains"]]
    spec = spec_for_moe(br.config["model_type"])
    layers = br.config["num_hidden_layers"]
    for layer in range(layers):
        for role in ROLES:
            assert torch.equal(out.get(spec.expert_key(role, layer, 0)), br.get(spec.expert_key(role, layer, 0)))
            for i, d in enumerate(doms, start=1):
                assert torch.equal(out.get(spec.expert_key(role, layer, i)), d.get(spec.expert_key(role, layer, 1)))
        router = out.get(spec.router_key(layer))
        assert router.shape == (4, br.config["hidden_size"])
        assert torch.equal(router[0], br.get(spec.router_key(layer))[0])  # frozen row 0: all inputs agree
        for i, d in enumerate(doms, start=1):
            assert torch.equal(router[i], d.get(spec.router_key(layer))[1])
    shared = [k for k in br.keys() if spec.parse_expert_key(k) is None and spec.parse_router_key(k) is None]
    for key in shared:
        expected = torch.stack([r.get(key).double() for r in [br, *doms]]).mean(0).float()
        torch.testing.assert_close(out.get(key), expected, rtol=0, atol=1e-6)
        assert not torch.equal(out.get(key), br.get(key)) or not br.get(key).numel()  # the domains moved them
    assert set(out.keys()) == spec.moe_keys(set(shared), layers, 4)
    config = AutoConfig.from_pretrained(str(out.path))
    assert config.barkit_expert_names == ["anchor", "x0", "x1", "x2"]
    assert getattr(config, spec.num_experts_key) == 4 and config.num_experts_per_tok == 4
    assert json.loads((out.path / "barkit_manifest.json").read_text())["experts"] == ["anchor", "x0", "x1", "x2"]
    assert (out.path / "tokenizer.json").is_file() and (out.path / "barkit_config.yaml").is_file()


def _sum_of_changes(deltas: torch.Tensor) -> torch.Tensor:
    return deltas.sum(0)


def _ties_of_changes(deltas: torch.Tensor) -> torch.Tensor:
    agree = (torch.sign(deltas) == torch.sign(deltas.sum(0))) & (deltas != 0)
    return (deltas * agree).sum(0) / agree.sum(0).clamp_min(1)


@pytest.mark.parametrize("mode, combine", [("sum", _sum_of_changes), ("ties", _ties_of_changes)])
def test_shared_delta_modes_combine_every_domains_change(tmp_path, worlds, mode, combine):
    """sum: anchor + sum_i (domain_i - anchor); ties: anchor + per entry the mean of the changes that agree with
    the sign of their sum. Experts are copied as in mean mode."""
    w = worlds["olmo2"]
    out = CheckpointReader(_compose(worlds, "olmo2", tmp_path / "moe", shared=mode, verify="keys"))
    br, doms = CheckpointReader(w["branch"]), [CheckpointReader(d) for d in w["domains"]]
    for key in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                "model.layers.0.self_attn.k_proj.weight"):
        base = br.get(key).double()
        expected = base + combine(torch.stack([d.get(key).double() - base for d in doms]))
        torch.testing.assert_close(out.get(key), expected.float(), rtol=0, atol=1e-6)
    for key in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.k_proj.weight"):
        assert not torch.equal(out.get(key), br.get(key))  # the domains moved them
    key = "model.layers.1.mlp.experts.2.up_proj.weight"
    assert torch.equal(out.get(key), doms[1].get("model.layers.1.mlp.experts.1.up_proj.weight"))


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_anchor_routed_to_expert0_reproduces_the_anchor(tmp_path, worlds, family):
    w = worlds[family]
    out = _compose(worlds, family, tmp_path / "moe", shared="anchor", verify="keys")
    ckpt, anchor = CheckpointReader(out), CheckpointReader(w["anchor"])
    for key in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.self_attn.q_proj.weight"):
        assert torch.equal(ckpt.get(key), anchor.get(key))
    moe, dense = verify.load_strict(out), verify.load_strict(w["anchor"])
    with mask_experts(moe, [1, 2, 3]):
        assert verify.max_logit_diff(moe, dense, 300) <= 1e-5
    assert verify.max_logit_diff(moe, dense, 300) > 1e-3  # unmasked, the domain experts contribute


def test_a_dense_qwen2_anchor_is_refused_for_the_branch_checkpoint(tmp_path, worlds):
    with pytest.raises(BarkitError, match="lacks tensors that Qwen2MoeForCausalLM has .* pass the branch checkpoint"):
        _compose(worlds, "qwen2", tmp_path / "moe", anchor="anchor")


def test_dense_anchor_is_accepted(tmp_path, worlds):
    w = worlds["olmo2"]
    out = CheckpointReader(_compose(worlds, "olmo2", tmp_path / "moe", anchor="anchor"))
    anchor, br = CheckpointReader(w["anchor"]), CheckpointReader(w["branch"])
    doms = [CheckpointReader(d) for d in w["domains"]]
    assert torch.equal(out.get("model.layers.0.mlp.experts.0.up_proj.weight"),
                       anchor.get("model.layers.0.mlp.up_proj.weight"))
    assert torch.equal(out.get("model.layers.1.mlp.gate.weight")[0], br.get("model.layers.1.mlp.gate.weight")[0])
    key = "model.norm.weight"
    expected = torch.stack([r.get(key).double() for r in [anchor, *doms]]).mean(0).float()
    torch.testing.assert_close(out.get(key), expected, rtol=0, atol=1e-6)
    assert out.config["num_experts"] == 4 and out.config["model_type"] == "flex_olmo"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mean_of_identical_inputs_is_bit_identical(tmp_path, dtype):
    w = _make_world(tmp_path / "w", "olmo2", dtype)
    d0 = w["domains"][0]
    out = compose(ComposeConfig(anchor=str(d0), experts=[f"a={d0}", f"b={d0}"], out=str(tmp_path / "moe"),
                                verify="keys"))
    src, ckpt = CheckpointReader(d0), CheckpointReader(out)
    for key in src.keys():
        if "experts" not in key and "mlp.gate" not in key:
            assert ckpt.get(key).dtype == dtype
            assert torch.equal(ckpt.get(key), src.get(key)), key
    assert torch.equal(ckpt.get("model.layers.0.mlp.gate.weight")[0], src.get("model.layers.0.mlp.gate.weight")[0])


def test_domain_saved_in_fp32_after_bf16_branching_is_cast_back(tmp_path):
    w = _make_world(tmp_path / "w", "olmo2", torch.bfloat16)
    d0 = CheckpointReader(w["domains"][0])
    upcast = tmp_path / "d0-fp32"
    shutil.copytree(d0.path, upcast)
    save_file({k: d0.get(k).float() for k in d0.keys()}, str(upcast / "model.safetensors"))
    out = CheckpointReader(compose(ComposeConfig(anchor=str(w["branch"]), out=str(tmp_path / "moe"),
                                                 experts=[f"x={upcast}", f"y={w['domains'][1]}"], verify="keys")))
    key = "model.layers.1.mlp.experts.{}.down_proj.weight"
    assert {out.get(k).dtype for k in out.keys()} == {torch.bfloat16}
    assert torch.equal(out.get(key.format(1)), d0.get(key.format(1)))


def test_compose_twice_gives_byte_identical_files(tmp_path, worlds):
    first = _compose(worlds, "olmo2", tmp_path / "one", max_shard_size="20KB", verify="keys", hash_outputs=True)
    second = _compose(worlds, "olmo2", tmp_path / "two", max_shard_size="20KB", verify="keys", hash_outputs=True)
    names = sorted(p.name for p in first.iterdir() if p.name not in ("barkit_manifest.json", "barkit_config.yaml"))
    assert len([n for n in names if n.endswith(".safetensors")]) > 3
    assert names == sorted(p.name for p in second.iterdir()
                           if p.name not in ("barkit_manifest.json", "barkit_config.yaml"))
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    manifests = [json.loads((d / "barkit_manifest.json").read_text()) for d in (first, second)]
    assert manifests[0]["weights_sha256"] == manifests[1]["weights_sha256"]


def test_cli_compose(tmp_path, worlds, capsys):
    w = worlds["olmo2"]
    out = tmp_path / "moe"
    code = main(["compose", "--anchor", str(w["branch"]), "--experts",
                 f"math={w['domains'][0]},code={w['domains'][1]}", "--out", str(out), "--top-k", "2",
                 "--norm-topk-prob", "true"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["barkit_expert_names"] == ["anchor", "math", "code"]
    assert (config["num_experts_per_tok"], config["norm_topk_prob"]) == (2, True)


def _assert_clean_failure(tmp_path, capsys, args, needle):
    code = main(["compose", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def _flip_last_bit(src: Path, key: str, out: Path) -> Path:
    """A copy of checkpoint `src` whose tensor `key` differs in the lowest bit of its last byte only."""
    reader = CheckpointReader(src)
    tensors = {k: reader.get(k) for k in reader.keys()}
    raw = tensors[key].reshape(-1).view(torch.uint8)
    raw[-1] ^= 1
    return save_like(src, tensors, out)


def test_compose_errors_are_one_line_and_leave_no_output(tmp_path, worlds, capsys):
    w, llama = worlds["olmo2"], worlds["llama"]
    br, (d0, d1, _) = str(w["branch"]), w["domains"]
    other = tmp_path / "other-branch"  # branched from a different anchor (the base)
    branch(BranchConfig(anchor=str(w["base"]), base=str(w["anchor"]), out=str(other)))
    stranger = fake_train(other, tmp_path / "stranger", seed=3)
    trained0 = fake_train(w["branch"], tmp_path / "trained0", seed=4, touch_expert0=True)
    wide = make_dense_checkpoint(tmp_path / "wide", "olmo2", hidden=48)
    branch(BranchConfig(anchor=str(wide), out=str(tmp_path / "wide-branch")))
    three = _compose(worlds, "olmo2", tmp_path / "three", verify="keys")
    one_bit = _flip_last_bit(d0, "model.layers.1.mlp.experts.0.down_proj.weight", tmp_path / "one-bit")
    cases = [
        ([f"x={stranger}"], "expert 'x' does not share the anchor"),
        ([f"x={trained0}"], "model.layers.1.mlp.experts.0.up_proj.weight' differs"),
        ([f"x0={d0}", f"x1={one_bit}"], "expert 'x1' does not share the anchor: its expert 0 "
                                        "'model.layers.1.mlp.experts.0.down_proj.weight' differs"),
        ([f"x={llama['domains'][0]}"], "architecture 'mixtral' differs from the anchor's 'flex_olmo'"),
        ([f"x={tmp_path / 'wide-branch'}"], "config 'hidden_size' is 48, the anchor's is 32"),
        ([f"x={d0}", f"x={d1}"], "duplicate expert name 'x'"),
        ([f"anchor={d0}"], "the name 'anchor' is reserved"),
        ([str(d0)], "is not NAME=CKPT"),
        ([f"x={w['anchor']}"], "expert 'x' is a dense 'olmo2' model, not a 2-expert barkit MoE"),
        ([f"x={three}"], "expert 'x' has 4 experts; compose takes 2-expert checkpoints"),
        ([f"x={tmp_path / 'missing'}"], "missing: no such checkpoint directory"),
    ]
    for experts, needle in cases:
        _assert_clean_failure(tmp_path, capsys, ["--anchor", br, "--experts", ",".join(experts)], needle)
    _assert_clean_failure(tmp_path, capsys, ["--anchor", br, "--experts", f"x={d0}", "--top-k", "3"],
                          "'top_k': must be between 1 and 2")
    _assert_clean_failure(tmp_path, capsys, ["--anchor", str(three), "--experts", f"x={d0}"],
                          "not a 4-expert MoE")


def test_replace_expert_swaps_one_expert_and_nothing_else(tmp_path, worlds):
    w = worlds["olmo2"]
    src = CheckpointReader(_compose(worlds, "olmo2", tmp_path / "moe", verify="keys"))
    new = fake_train(w["branch"], tmp_path / "new", seed=99)
    out = CheckpointReader(replace_expert(src.path, "x1", new, tmp_path / "upgraded"))
    new_ckpt, spec = CheckpointReader(new), spec_for_moe("flex_olmo")
    changed = set()
    for key in src.keys():
        parsed, layer = spec.parse_expert_key(key), spec.parse_router_key(key)
        if parsed is not None and parsed[2] == 2:
            assert torch.equal(out.get(key), new_ckpt.get(spec.expert_key(parsed[0], parsed[1], 1)))
            changed.add(key)
        elif layer is not None:
            router, before = out.get(key), src.get(key)
            assert torch.equal(router[2], new_ckpt.get(key)[1])
            assert torch.equal(router[[0, 1, 3]], before[[0, 1, 3]])
        else:
            assert torch.equal(out.get(key), src.get(key)), key
    assert len(changed) == 3 * 2 and set(out.keys()) == set(src.keys())
    assert out.config["barkit_expert_names"] == ["anchor", "x0", "x1", "x2"]
    other = tmp_path / "other-branch"
    branch(BranchConfig(anchor=str(w["base"]), out=str(other)))
    with pytest.raises(BarkitError, match="does not share the anchor"):
        replace_expert(src.path, "x1", fake_train(other, tmp_path / "stranger", 1), tmp_path / "bad")
    with pytest.raises(BarkitError, match="no expert named 'nope'"):
        replace_expert(src.path, "nope", new, tmp_path / "bad")
    with pytest.raises(BarkitError, match="frozen anchor"):
        replace_expert(src.path, "anchor", new, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
