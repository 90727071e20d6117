import json
import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from barkit.arch import ARCHITECTURES, ROLES, spec_for_dense
from barkit.branch import BranchConfig, branch
from barkit.checkpoint import CheckpointReader
from barkit.cli import main
from barkit.errors import BarkitError
from barkit.tiny import make_dense_checkpoint

FAMILIES = ("olmo2", "llama", "qwen2", "qwen3")


def _branch(tmp_path, anchor, base=None, **kw):
    out = tmp_path / "moe"
    branch(BranchConfig(anchor=str(anchor), base=str(base) if base else None, out=str(out), **kw))
    return out


def _logits(path, ids):
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("top_k,norm", [(2, False), (1, True)])
def test_branch_of_anchor_reproduces_dense_logits(tmp_path, dense_ckpts, family, top_k, norm):
    anchor, _ = dense_ckpts[family]
    out = _branch(tmp_path, anchor, top_k=top_k, norm_topk_prob=norm, seed=3)
    ids = torch.randint(0, 300, (3, 24), generator=torch.Generator().manual_seed(0))
    diff = (_logits(out, ids) - _logits(anchor, ids)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_branch_tensors_are_bit_identical_to_sources(tmp_path, dense_ckpts, family):
    anchor_dir, base_dir = dense_ckpts[family]
    out = CheckpointReader(_branch(tmp_path, anchor_dir, base_dir))
    anchor, base = CheckpointReader(anchor_dir), CheckpointReader(base_dir)
    spec = spec_for_dense(anchor.config["model_type"])
    layers = anchor.config["num_hidden_layers"]
    ffn = spec.dense_ffn_keys(layers)
    for role in ROLES:
        for layer in range(layers):
            dense_key = spec.dense_key(role, layer)
            assert torch.equal(out.get(spec.expert_key(role, layer, 0)), anchor.get(dense_key))
            assert torch.equal(out.get(spec.expert_key(role, layer, 1)), base.get(dense_key))
            assert not torch.equal(anchor.get(dense_key), base.get(dense_key))
    for key in set(anchor.keys()) - ffn:
        assert torch.equal(out.get(key), anchor.get(key)), key
    added = spec.added_tensors(anchor.config)  # Qwen2-MoE's shared expert: zero width, zero gate
    assert all(not out.get(key).any() and list(out.shape(key)) == list(shape) for key, shape in added.items())
    assert set(out.keys()) == spec.moe_keys(set(anchor.keys()) - ffn | set(added), layers, 2)
    assert out.shape(spec.router_key(0)) == [2, anchor.config["hidden_size"]]


@pytest.mark.parametrize("family", FAMILIES)
def test_branch_loads_with_stock_transformers_and_keeps_config(tmp_path, dense_ckpts, family):
    anchor, base = dense_ckpts[family]
    out = _branch(tmp_path, anchor, base)
    model, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert type(model).__name__ == ARCHITECTURES[family].moe_architecture
    generated = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 7)
    dense_cfg, moe_cfg = AutoConfig.from_pretrained(str(anchor)), AutoConfig.from_pretrained(str(out))
    for key in ("rope_parameters", "rms_norm_eps", "pad_token_id", "eos_token_id", "bos_token_id", "vocab_size"):
        assert getattr(moe_cfg, key) == getattr(dense_cfg, key), key
    assert moe_cfg.num_experts_per_tok == 2
    # router weights are saved: two loads give identical outputs
    again = AutoModelForCausalLM.from_pretrained(str(out))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model(ids).logits, again(ids).logits)
    manifest = json.loads((out / "barkit_manifest.json").read_text())
    assert manifest["parents"]["anchor"]["weights_sha256"] == CheckpointReader(anchor).fingerprint()
    assert (out / "tokenizer.json").is_file() and (out / "barkit_config.yaml").is_file()


@pytest.mark.parametrize("hash_outputs", [False, True])
def test_output_hashes_recorded_now_or_on_first_read(tmp_path, dense_ckpts, monkeypatch, hash_outputs):
    """By default branch skips hashing its own output (a byte copy, else bound by sha256); the first reader
    hashes it. Either way the hashes a later job records are the files' sha256."""
    import hashlib

    monkeypatch.setenv("BARKIT_HASH_CACHE", "off")
    anchor, base = dense_ckpts["olmo2"]
    out = _branch(tmp_path, anchor, base, hash_outputs=hash_outputs, max_shard_size="20KB")
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 1
    actual = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in files}
    manifest = json.loads((out / "barkit_manifest.json").read_text())
    if hash_outputs:
        assert {k: v["sha256"] for k, v in manifest["weights_sha256"]["files"].items()} == actual
    else:
        assert manifest["weights_sha256"] is None
        assert manifest["weights_files"] == {n: {"size": (out / n).stat().st_size} for n in files}
    assert CheckpointReader(out).weights_sha256() == actual


def test_router_init_modes(tmp_path, dense_ckpts):
    anchor, _ = dense_ckpts["olmo2"]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "the quick brown fox"}\n{"messages": [{"role": "user", "content": "1 + 2"}]}\n')
    routers = {}
    for mode in ("random", "hidden", "embed"):
        out = tmp_path / mode
        branch(BranchConfig(anchor=str(anchor), out=str(out), router_init=mode, prompts=str(prompts), seed=7))
        ckpt = CheckpointReader(out)
        routers[mode] = [ckpt.get(f"model.layers.{i}.mlp.gate.weight") for i in range(2)]
    # row 0 is the same seeded random row in every mode; row 1 comes from the prompts
    assert torch.equal(routers["random"][0][0], routers["hidden"][0][0])
    assert torch.equal(routers["embed"][0][1], routers["embed"][1][1])  # embed: same for every layer
    assert not torch.allclose(routers["hidden"][0][1], routers["hidden"][1][1])  # hidden: per layer
    expected_norm = 0.02 * 32 ** 0.5
    assert abs(routers["hidden"][0][1].norm().item() - expected_norm) < 1e-4


def _run_cli(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err.strip()


def _assert_clean_failure(tmp_path, code, err, needle):
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_cli_errors_are_one_line_and_leave_no_output(tmp_path, dense_ckpts, capsys):
    anchor, _ = dense_ckpts["olmo2"]
    llama, _ = dense_ckpts["llama"]
    out = str(tmp_path / "out")
    code, err = _run_cli(capsys, "branch", str(tmp_path / "nope"), "--out", out)
    _assert_clean_failure(tmp_path, code, err, "nope: no such checkpoint directory")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(anchor, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"garbage that is not safetensors")
    code, err = _run_cli(capsys, "branch", str(corrupt), "--out", out)
    _assert_clean_failure(tmp_path, code, err, "corrupt/model.safetensors")

    truncated = tmp_path / "truncated"
    shutil.copytree(anchor, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) - 100])
    code, err = _run_cli(capsys, "branch", str(truncated), "--out", out)
    _assert_clean_failure(tmp_path, code, err, "truncated")

    code, err = _run_cli(capsys, "branch", str(anchor), "--base", str(llama), "--out", out)
    _assert_clean_failure(tmp_path, code, err, "base architecture 'llama' differs")

    wide = make_dense_checkpoint(tmp_path / "wide", "olmo2", hidden=48)
    code, err = _run_cli(capsys, "branch", str(anchor), "--base", str(wide), "--out", out)
    _assert_clean_failure(tmp_path, code, err, "base has hidden_size=48, the anchor 32")

    gpt = tmp_path / "gpt"
    shutil.copytree(anchor, gpt)
    cfg = json.loads((gpt / "config.json").read_text())
    (gpt / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    code, err = _run_cli(capsys, "branch", str(gpt), "--out", out)
    _assert_clean_failure(tmp_path, code, err, "unsupported architecture 'gpt2'; supported dense families: llama")

    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    code, err = _run_cli(capsys, "branch", str(anchor), "--out", out, "--router-init", "hidden",
                         "--prompts", str(empty))
    _assert_clean_failure(tmp_path, code, err, "empty.txt: prompts file is empty")

    code, err = _run_cli(capsys, "branch", str(anchor), "--out", out, "--set", "bogus=1")
    _assert_clean_failure(tmp_path, code, err, "unknown config key 'bogus'")


def test_a_base_with_another_rope_theta_is_refused_unless_accepted(tmp_path, dense_ckpts, capsys):
    """The MoE keeps the anchor's attention config (so it reproduces the anchor); a base trained under another
    rope theta (BAR-7B's anchor and the Olmo 2 base differ so) is named, and branches only when accepted."""
    anchor, base = dense_ckpts["olmo2"]
    other = tmp_path / "base"
    shutil.copytree(base, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["rope_parameters"] = {**cfg["rope_parameters"], "rope_theta": 8e6}
    (other / "config.json").write_text(json.dumps(cfg))
    out = str(tmp_path / "out")
    code, err = _run_cli(capsys, "branch", str(anchor), "--base", str(other), "--out", out)
    _assert_clean_failure(tmp_path, code, err, "base has rope_parameters.rope_theta=8000000.0, the anchor 123456.0")
    assert "--accept-base-differences rope_parameters" in err
    code, _ = _run_cli(capsys, "branch", str(anchor), "--base", str(other), "--out", out,
                       "--accept-base-differences", "rope_parameters")
    assert code == 0
    moe = json.loads((tmp_path / "out" / "config.json").read_text())
    assert moe["rope_parameters"]["rope_theta"] == 123456.0  # the anchor's
    code, err = _run_cli(capsys, "branch", str(anchor), "--base", str(other), "--out", out + "2",
                         "--accept-base-differences", "rope")
    assert code == 1 and "unknown field 'rope'" in err


def test_existing_output_is_refused(tmp_path, dense_ckpts):
    anchor, _ = dense_ckpts["olmo2"]
    _branch(tmp_path, anchor)
    with pytest.raises(BarkitError, match="already exists"):
        _branch(tmp_path, anchor)
