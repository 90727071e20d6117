import json

import pytest
import torch

from barkit import verify
from barkit.arch import ROLES, spec_for_dense
from barkit.branch import BranchConfig, branch
from barkit.checkpoint import CheckpointReader
from barkit.cli import main
from barkit.errors import BarkitError
from barkit.merge import MergeConfig, fold_expert, merge, parse_models
from barkit.mixing import MergeSettings, dare, dare_mask, dare_seed, merge_tensors, trim
from barkit.select import mask_experts
from barkit.tiny import make_dense_checkpoint

TIES = MergeSettings(density=0.5, elect_sign=True)


# --- the core, on hand-built tensors -----------------------------------------------------------------------

def test_task_arithmetic_with_lambdas():
    base = torch.tensor([1.0, -1.0, 0.5])
    deltas = [torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 4.0, 1.0])]
    out = merge_tensors(base, deltas, [0.5, 0.25])
    assert out.tolist() == [2.0, 0.0, 0.25]  # 1+1, -1+1, 0.5-0.5+0.25


def test_ties_trims_elects_sign_by_magnitude_and_takes_disjoint_mean():
    d1 = torch.tensor([0.5, -0.1, 0.3, -2.0, 0.25])
    d2 = torch.tensor([-0.6, 0.2, 0.1, 1.0, 0.75])
    d3 = torch.tensor([0.4, -0.05, -0.8, 0.5, 0.5])
    # density 0.6 of 5 entries keeps 3 per task vector:
    assert trim(d1, 0.6).tolist() == pytest.approx([0.5, 0, 0.3, -2.0, 0])
    assert trim(d2, 0.6).tolist() == pytest.approx([-0.6, 0, 0, 1.0, 0.75])
    assert trim(d3, 0.6).tolist() == pytest.approx([0, 0, -0.8, 0.5, 0.5])
    out = merge_tensors(torch.zeros(5), [d1, d2, d3], [1.0, 1.0, 1.0], MergeSettings(density=0.6, elect_sign=True))
    # entry 0: 0.5 - 0.6 < 0 -> only d2 agrees: -0.6.  entry 1: everything trimmed: 0.
    # entry 2: 0.3 - 0.8 < 0 -> -0.8.  entry 3: |-2.0| beats 1.0 + 0.5 -> negative wins: -2.0.
    # entry 4: d2 and d3 agree (d1 trimmed): mean(0.75, 0.5) = 0.625.
    assert out.tolist() == pytest.approx([-0.6, 0.0, -0.8, -2.0, 0.625], abs=1e-7)
    # weights scale each task vector before the election; with one task vector TIES is trimmed task arithmetic
    assert merge_tensors(torch.ones(5), [d1], [2.0], MergeSettings(density=0.6, elect_sign=True)).tolist() == \
        pytest.approx([2.0, 1.0, 1.6, -3.0, 1.0])


MERGEKIT_TIES = dict(trim_rounding="floor", ties_divisor="weight_sum")  # mergekit's ties: normalize true
MERGEKIT_DARE_TIES = dict(dare_rescale="l1", ties_divisor="none")  # mergekit's dare_ties: rescale, no normalize


def test_ties_with_unequal_weights_in_mergekit_s_conventions():
    """Hand-computed: int(0.6 * 6) = 3 entries kept per task vector (round would keep 4), weights 0.7 / 0.3, sign
    of the weighted sum (+ where it is 0), agreeing weighted deltas divided by their summed weights."""
    base = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    d1 = torch.tensor([0.5, -0.2, 0.1, -0.9, 0.3, 0.05])  # keeps 0.5, -0.9, 0.3
    d2 = torch.tensor([0.65, 0.6, 0.2, -0.1, -0.7, 0.8])  # keeps 0.65, -0.7, 0.8
    # weighted: [0.35, 0, 0, -0.63, 0.21, 0] and [0.195, 0, 0, 0, -0.21, 0.24]; sums [0.545, 0, 0, -0.63, 0, 0.24]
    # entry 0: both agree, (0.35 + 0.195) / (0.7 + 0.3); entry 4: the sum is 0 -> + elected, d1 alone: 0.21 / 0.7
    expected = base + torch.tensor([0.545, 0.0, 0.0, -0.9, 0.3, 0.8])
    settings = MergeSettings(density=0.6, elect_sign=True, **MERGEKIT_TIES)
    torch.testing.assert_close(merge_tensors(base, [d1, d2], [0.7, 0.3], settings), expected, rtol=0, atol=1e-6)
    assert trim(d1, 0.6, "floor").count_nonzero() == 3 and trim(d1, 0.6).count_nonzero() == 4
    # barkit's default (the TIES paper's disjoint mean, round) differs: entry 0 is (0.35 + 0.195) / 2
    paper = merge_tensors(base, [d1, d2], [0.7, 0.3], MergeSettings(density=0.6, elect_sign=True))
    assert paper[0].item() == pytest.approx(1.2725, abs=1e-6)


def test_dare_ties_with_unequal_weights_in_mergekit_s_conventions():
    """Hand-computed from the same keep masks: kept entries rescaled so each task vector keeps its L1 norm, weighted,
    sign elected, agreeing ones summed without a divisor."""
    base = torch.zeros(8)
    d1 = torch.tensor([0.4, -0.3, 0.2, 0.1, -0.5, 0.6, -0.2, 0.3])
    d2 = torch.tensor([-0.2, 0.5, 0.3, -0.4, 0.1, 0.2, 0.6, -0.1])
    weights, p, seed = [0.8, 0.2], 0.5, 11
    masks = [dare_mask(d.shape, p, dare_seed(seed, "w", i)) for i, d in enumerate((d1, d2))]
    weighted = []
    for d, mask, w in zip((d1, d2), masks, weights):
        kept = [x if m else 0.0 for x, m in zip(d.tolist(), mask.tolist())]
        scale = sum(abs(x) for x in d.tolist()) / sum(abs(x) for x in kept)
        weighted.append([w * scale * x for x in kept])
    expected = []
    for a, b in zip(*weighted):
        sign = 1 if a + b >= 0 else -1
        expected.append(sum(x for x in (a, b) if x != 0 and (x > 0) == (sign > 0)))
    settings = MergeSettings(drop_p=p, elect_sign=True, seed=seed, **MERGEKIT_DARE_TIES)
    out = merge_tensors(base, [d1, d2], weights, settings, key="w")
    torch.testing.assert_close(out, torch.tensor(expected), rtol=0, atol=1e-6)
    assert 0 < sum(m.sum().item() for m in masks) < 16  # some entries dropped, some kept
    inverse = dare(d1, p, dare_seed(seed, "w", 0))  # the DARE paper: kept entries x 1 / (1 - p)
    torch.testing.assert_close(inverse, d1 * masks[0] * 2, rtol=0, atol=0)


def test_dare_with_p_zero_is_task_arithmetic_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 8, generator=gen)
    deltas = [torch.randn(64, 8, generator=gen) for _ in range(3)]
    plain = merge_tensors(base, deltas, [0.3, 0.5, 0.7])
    assert torch.equal(merge_tensors(base, deltas, [0.3, 0.5, 0.7], MergeSettings(drop_p=0.0, seed=4)), plain)
    assert torch.equal(dare(deltas[0], 0.0, seed=1), deltas[0])


def test_seeded_dare_is_deterministic_and_keyed():
    delta = torch.ones(1000)
    first = dare(delta, 0.3, dare_seed(7, "model.layers.0.mlp.up_proj.weight", 0))
    assert torch.equal(first, dare(delta, 0.3, dare_seed(7, "model.layers.0.mlp.up_proj.weight", 0)))
    for other in (dare_seed(8, "model.layers.0.mlp.up_proj.weight", 0),
                  dare_seed(7, "model.layers.1.mlp.up_proj.weight", 0),
                  dare_seed(7, "model.layers.0.mlp.up_proj.weight", 1)):
        assert not torch.equal(first, dare(delta, 0.3, other))
    kept = first != 0
    assert torch.equal(first[kept], torch.full((int(kept.sum()),), 1 / 0.7))
    assert abs(kept.float().mean().item() - 0.7) < 0.05
    settings = MergeSettings(drop_p=0.3, seed=7)
    a = merge_tensors(torch.zeros(1000), [delta], [1.0], settings, key="k")
    assert torch.equal(a, merge_tensors(torch.zeros(1000), [delta], [1.0], settings, key="k"))
    assert not torch.equal(a, merge_tensors(torch.zeros(1000), [delta], [1.0], settings, key="k2"))


def test_dare_preserves_the_expected_value():
    delta = torch.linspace(-1.0, 1.0, 64)
    draws = torch.stack([dare(delta, 0.3, seed) for seed in range(2000)])
    # per entry, the mean of 2000 draws has std |delta| * sqrt(p / (1 - p) / 2000) <= 0.015
    assert (draws.mean(0) - delta).abs().max().item() < 0.07
    assert (draws.mean(0) - delta).abs().mean().item() < 0.015


def test_merging_zero_task_vectors_is_the_identity_bit_for_bit():
    """theta_i == theta_ref gives exactly-zero task vectors, so the base comes back unchanged in any dtype."""
    for dtype in (torch.float32, torch.bfloat16):
        base = (torch.randn(32, 16, generator=torch.Generator().manual_seed(2)) * 0.02).to(dtype)
        for settings in (MergeSettings(), TIES, MergeSettings(drop_p=0.5), MergeSettings(drop_p=0.5, elect_sign=True)):
            zeros = [base.float() - base.float()] * 2
            out = merge_tensors(base, zeros, [0.7, 0.4], settings, key="w")
            assert out.dtype == dtype and torch.equal(out, base)


def test_parse_models(tmp_path):
    colon = tmp_path / "d:e"
    colon.mkdir()  # an existing directory whose name has a colon is a path, not a weight
    assert parse_models(["math=/a/b:0.5", "code=/c", f"x={colon}"]) == [("math", "/a/b", 0.5), ("code", "/c", None),
                                                                       ("x", str(colon), None)]
    with pytest.raises(BarkitError, match="duplicate"):
        parse_models(["a=/x", "a=/y"])
    with pytest.raises(BarkitError, match="math=/a:abc: weight 'abc' is not a number"):
        parse_models(["math=/a:abc"])


# --- checkpoints ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    out = {name: make_dense_checkpoint(root / name, "olmo2", seed=seed)
           for name, seed in (("general", 0), ("pretrained", 1), ("math", 2), ("code", 3))}
    out["branch"] = root / "branch"
    branch(BranchConfig(anchor=str(out["general"]), base=str(out["math"]), out=str(out["branch"])))
    return out


def _merge(ckpts, tmp_path, method, models, pretrained=True, **kw):
    return merge(MergeConfig(method=method, general=str(ckpts["general"]), models=models, out=str(tmp_path / "out"),
                             pretrained=str(ckpts["pretrained"]) if pretrained else None, **kw))


def _readers(ckpts, *names):
    return [CheckpointReader(ckpts[n]) for n in names]


def test_task_arithmetic_checkpoint_values_and_stock_loading(tmp_path, ckpts, capsys):
    out = tmp_path / "out"
    code = main(["merge", "--method", "task_arithmetic", "--general", str(ckpts["general"]), "--pretrained",
                 str(ckpts["pretrained"]), "--models", f"math={ckpts['math']}:0.5,code={ckpts['code']}:0.25",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    general, pre, math, code_ = _readers(ckpts, "general", "pretrained", "math", "code")
    merged = CheckpointReader(out)
    assert set(merged.keys()) == set(general.keys())
    for key in general.keys():
        g, p, m, c = (r.get(key).double() for r in (general, pre, math, code_))
        expected = (g + 0.5 * (m - p) + 0.25 * (c - p)).float()
        torch.testing.assert_close(merged.get(key), expected, rtol=0, atol=1e-7)
    model = verify.load_strict(out)
    assert type(model).__name__ == "Olmo2ForCausalLM"
    assert json.loads((out / "barkit_manifest.json").read_text())["lambdas"] == {"math": 0.5, "code": 0.25}


def test_wise_ft_and_linear_interpolate(tmp_path, ckpts):
    general, math, code = _readers(ckpts, "general", "math", "code")
    key = "model.layers.1.mlp.down_proj.weight"
    out = CheckpointReader(_merge(ckpts, tmp_path, "wise_ft", [f"ft={ckpts['math']}:0.3"], pretrained=False))
    expected = (0.7 * general.get(key).double() + 0.3 * math.get(key).double()).float()
    torch.testing.assert_close(out.get(key), expected, rtol=0, atol=1e-7)
    out = CheckpointReader(merge(MergeConfig(method="linear", general=str(ckpts["general"]), out=str(tmp_path / "lin"),
                                             models=[f"m={ckpts['math']}", f"c={ckpts['code']}"])))
    expected = ((general.get(key).double() + math.get(key).double() + code.get(key).double()) / 3).float()
    torch.testing.assert_close(out.get(key), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare", "dare_ties", "linear", "wise_ft"])
def test_merging_a_model_with_itself_is_the_identity(tmp_path, ckpts, method):
    """Task vectors are exactly zero (theta_i == theta_ref), so the general model comes back bit-identical."""
    linear = method in ("linear", "wise_ft")
    same = ckpts["general"] if linear else ckpts["pretrained"]
    out = CheckpointReader(_merge(ckpts, tmp_path, method, [f"self={same}:0.6"], pretrained=not linear,
                                  verify="keys"))
    general = CheckpointReader(ckpts["general"])
    for key in general.keys():
        assert torch.equal(out.get(key), general.get(key)), key


def test_ties_and_dare_checkpoints_are_seeded(tmp_path, ckpts):
    models = [f"m={ckpts['math']}", f"c={ckpts['code']}"]
    a = CheckpointReader(_merge(ckpts, tmp_path / "a", "dare_ties", models, seed=3, verify="keys"))
    b = CheckpointReader(_merge(ckpts, tmp_path / "b", "dare_ties", models, seed=3, verify="keys"))
    c = CheckpointReader(_merge(ckpts, tmp_path / "c", "dare_ties", models, seed=4, verify="keys"))
    key = "model.layers.0.mlp.gate_proj.weight"
    assert torch.equal(a.get(key), b.get(key)) and not torch.equal(a.get(key), c.get(key))
    ties = CheckpointReader(_merge(ckpts, tmp_path / "t", "ties", models, density=0.1, verify="full"))
    general, pre = _readers(ckpts, "general", "pretrained")
    changed = (ties.get(key) != general.get(key)).float().mean().item()
    assert 0.05 < changed <= 0.2  # at most 10% of each task vector survives trimming


def _mergekit_ties_reference(base, tensors, weights, density):
    """mergekit's ties (normalize: true, no rescale), written out independently of barkit.mixing, in the inputs'
    dtype op by op as mergekit computes it; `density` is one value or one per model."""
    densities = density if isinstance(density, list) else [density] * len(tensors)
    deltas = []
    for tensor, d in zip(tensors, densities):
        delta = (tensor - base).flatten()
        keep = torch.zeros_like(delta)
        keep[torch.argsort(delta.abs().float(), descending=True)[:max(1, int(d * delta.numel()))]] = 1
        deltas.append(delta * keep)
    w = torch.tensor(weights, dtype=base.dtype)[:, None]
    stacked = torch.stack(deltas) * w
    majority = (stacked.sum(0) >= 0).to(base.dtype) * 2 - 1
    mask = torch.sign(stacked) == majority
    divisor = (w * mask).sum(0)
    divisor[divisor == 0] = 1
    return (base.flatten() + (stacked * mask).sum(0) / divisor).view(base.shape).to(base.dtype)


def test_merge_checkpoints_with_mergekit_options_match_a_mergekit_reference(tmp_path, ckpts):
    """`barkit merge --method ties --trim-rounding floor --ties-divisor weight_sum` (general = pretrained, as
    mergekit has one base model) against mergekit's ties arithmetic written out per tensor: within 1e-6."""
    out = tmp_path / "out"
    assert main(["merge", "--method", "ties", "--general", str(ckpts["pretrained"]), "--pretrained",
                 str(ckpts["pretrained"]), "--models", f"m={ckpts['math']}:0.7,c={ckpts['code']}:0.3",
                 "--density", "0.3", "--trim-rounding", "floor", "--ties-divisor", "weight_sum", "--out", str(out),
                 "--verify", "keys"]) == 0
    pre, math, code = _readers(ckpts, "pretrained", "math", "code")
    merged = CheckpointReader(out)
    for key in pre.keys():
        expected = _mergekit_ties_reference(pre.get(key).double(), [math.get(key).double(), code.get(key).double()],
                                            [0.7, 0.3], 0.3)
        torch.testing.assert_close(merged.get(key).double(), expected, rtol=0, atol=1e-6)


def test_per_model_densities_match_the_mergekit_reference(tmp_path, ckpts):
    """mergekit's per-model density (`--densities m=0.5,c=0.15`), in its conventions: within 1e-6 (fp64 reference)."""
    out = tmp_path / "out"
    assert main(["merge", "--method", "ties", "--general", str(ckpts["pretrained"]), "--pretrained",
                 str(ckpts["pretrained"]), "--models", f"m={ckpts['math']}:0.7,c={ckpts['code']}:0.3",
                 "--density", "0.9", "--densities", "m=0.5,c=0.15", "--trim-rounding", "floor", "--ties-divisor",
                 "weight_sum", "--out", str(out), "--verify", "keys"]) == 0
    pre, math, code = _readers(ckpts, "pretrained", "math", "code")
    merged = CheckpointReader(out)
    for key in pre.keys():
        expected = _mergekit_ties_reference(pre.get(key).double(), [math.get(key).double(), code.get(key).double()],
                                            [0.7, 0.3], [0.5, 0.15])
        torch.testing.assert_close(merged.get(key).double(), expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def bf16_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-bf16")
    return {name: make_dense_checkpoint(root / name, "olmo2", seed=seed, dtype=torch.bfloat16)
            for name, seed in (("pretrained", 1), ("math", 2), ("code", 3))}


def test_compute_dtype_input_is_mergekit_s_bf16_arithmetic_bit_for_bit(tmp_path, bf16_ckpts):
    """bf16 inputs: `--compute-dtype input` equals mergekit's op-by-op bf16 ties exactly; the default (`wide`,
    fp32 arithmetic rounded once) differs from it in some entries and is, tensor by tensor, at least as close to
    the fp64 result in total."""
    ck = bf16_ckpts
    pre, math, code = (CheckpointReader(ck[n]) for n in ("pretrained", "math", "code"))
    outs = {}
    for mode in ("input", "wide"):
        outs[mode] = tmp_path / mode
        assert main(["merge", "--method", "ties", "--general", str(ck["pretrained"]), "--pretrained",
                     str(ck["pretrained"]), "--models", f"m={ck['math']}:0.6,c={ck['code']}:0.3", "--density", "0.3",
                     "--trim-rounding", "floor", "--ties-divisor", "weight_sum", "--compute-dtype", mode,
                     "--out", str(outs[mode]), "--verify", "keys"]) == 0
    differ = 0
    for key in pre.keys():
        args = [math.get(key), code.get(key)], [0.6, 0.3], 0.3
        bf16 = _mergekit_ties_reference(pre.get(key), *args)
        got = {m: CheckpointReader(o).get(key) for m, o in outs.items()}
        assert torch.equal(got["input"], bf16), key
        exact = _mergekit_ties_reference(pre.get(key).double(), [t.double() for t in args[0]], *args[1:])
        errors = {m: float((t.double() - exact).abs().sum()) for m, t in got.items()}
        assert errors["wide"] <= errors["input"], (key, errors)
        differ += int((got["wide"] != got["input"]).sum())
    assert differ > 0


def test_a_low_density_keeps_one_entry_per_tensor_under_floor_as_mergekit(tmp_path, ckpts):
    """int(0.01 x n) = 0 for the small norm tensors: mergekit 0.1.5 keeps max(1, int(density x n)) entries, and
    so does `--trim-rounding floor` (the reference above is written with that rule); the default rounding keeps
    round(density x n), none of such a tensor's task vector."""
    argv = ["merge", "--method", "ties", "--general", str(ckpts["pretrained"]), "--pretrained",
            str(ckpts["pretrained"]), "--models", f"m={ckpts['math']}:0.7,c={ckpts['code']}:0.3", "--density", "0.01",
            "--ties-divisor", "weight_sum", "--verify", "keys"]
    assert main([*argv, "--trim-rounding", "floor", "--out", str(tmp_path / "floor")]) == 0
    assert main([*argv, "--out", str(tmp_path / "round")]) == 0
    pre, math, code = _readers(ckpts, "pretrained", "math", "code")
    small = [k for k in pre.keys() if 0 < 0.01 * pre.get(k).numel() < 0.5]
    assert small
    for key in small:
        floor, rounded = (CheckpointReader(tmp_path / d).get(key) for d in ("floor", "round"))
        expected = _mergekit_ties_reference(pre.get(key).double(), [math.get(key).double(), code.get(key).double()],
                                            [0.7, 0.3], 0.01)
        torch.testing.assert_close(floor.double(), expected, rtol=0, atol=1e-6)
        assert 1 <= int((floor != pre.get(key)).sum()) <= 2 and torch.equal(rounded, pre.get(key))


def test_lambda_steps_heuristic(tmp_path, ckpts):
    from barkit.merge import open_dense, resolve_lambdas

    models = []
    for name, steps in (("math", 30), ("code", 10)):
        view = open_dense(ckpts[name], name)
        view.manifest = lambda steps=steps: {"train_steps": steps}
        models.append((name, view, None))
    general = open_dense(ckpts["general"], "general")
    general.manifest = lambda: {"train_steps": 60}
    cfg = MergeConfig(method="task_arithmetic", general="g", models=["a=x"], out="o", pretrained="p",
                      lambda_heuristic="steps")
    assert resolve_lambdas(cfg, general, models) == [0.3, 0.1]
    models[1] = ("code", models[1][1], 0.9)  # an explicit lambda wins
    assert resolve_lambdas(cfg, general, models) == [0.3, 0.9]
    models[0][1].manifest = lambda: None  # no step count: equal lambdas
    assert resolve_lambdas(cfg, general, models) == [1.0, 0.9]


@pytest.mark.parametrize("family", ["olmo2", "llama"])
def test_fold_expert_is_the_dense_version_of_the_expert(tmp_path, dense_ckpts, family):
    anchor_dir, base_dir = dense_ckpts[family]
    moe_dir = tmp_path / "moe"
    branch(BranchConfig(anchor=str(anchor_dir), base=str(base_dir), out=str(moe_dir)))
    out = fold_expert(moe_dir, tmp_path / "dense", "trainable")
    folded, anchor, base = CheckpointReader(out), CheckpointReader(anchor_dir), CheckpointReader(base_dir)
    spec = spec_for_dense(anchor.config["model_type"])
    assert set(folded.keys()) == set(anchor.keys())
    ffn = spec.dense_ffn_keys(2)
    for key in anchor.keys():
        assert torch.equal(folded.get(key), (base if key in ffn else anchor).get(key)), key
    assert {k: v for k, v in folded.config.items() if k != "transformers_version"} == \
        {k: v for k, v in anchor.config.items() if k != "transformers_version"}
    dense, moe = verify.load_strict(out), verify.load_strict(moe_dir)
    with mask_experts(moe, [0]):
        assert verify.max_logit_diff(dense, moe, 300) <= 1e-5
    assert verify.max_logit_diff(dense, moe, 300) > 1e-3
    expert0 = CheckpointReader(fold_expert(moe_dir, tmp_path / "e0", 0, verify_mode="keys"))
    assert all(torch.equal(expert0.get(k), anchor.get(k)) for k in anchor.keys())  # the anchor itself


def test_merge_takes_a_bar_expert_through_its_expert1(tmp_path, ckpts):
    out = CheckpointReader(_merge(ckpts, tmp_path, "linear", [f"bar={ckpts['branch']}:1.0"], pretrained=False))
    general, math = _readers(ckpts, "general", "math")
    spec = spec_for_dense("olmo2")
    for role in ROLES:
        key = spec.dense_key(role, 1)
        torch.testing.assert_close(out.get(key), math.get(key), rtol=0, atol=1e-7)
    assert torch.equal(out.get("model.norm.weight"), general.get("model.norm.weight"))


def test_merge_errors(tmp_path, ckpts, dense_ckpts, capsys):
    llama, _ = dense_ckpts["llama"]
    wide = make_dense_checkpoint(tmp_path / "wide", "olmo2", hidden=48)
    three = tmp_path / "three"
    from barkit.compose import ComposeConfig, compose

    compose(ComposeConfig(anchor=str(ckpts["branch"]), experts=[f"a={ckpts['branch']}", f"b={ckpts['branch']}"],
                          out=str(three), verify="none"))
    g, p, m = (str(ckpts[n]) for n in ("general", "pretrained", "math"))
    cases = [
        (["--method", "ties", "--models", f"m={m}"], "'pretrained': required for method ties"),
        (["--method", "linear", "--pretrained", p, "--models", f"m={m}"], "takes no pretrained model"),
        (["--method", "wise_ft", "--models", f"m={m},n={m}"], "wise_ft takes exactly one fine-tuned model"),
        (["--method", "ties", "--pretrained", p, "--models", f"m={m}", "--density", "0"], "'density': must be"),
        (["--method", "dare", "--pretrained", p, "--models", f"m={m}", "--drop-p", "1"], "'drop_p': must be"),
        (["--method", "linear", "--models", f"m={llama}"], "m is 'llama', the general model 'olmo2'"),
        (["--method", "linear", "--models", f"m={wide}"], "has shape [300, 48]"),
        (["--method", "linear", "--models", f"m={three}"], "m is a 3-expert MoE; fold the expert"),
        (["--method", "bogus", "--models", f"m={m}"], "'bogus' is not one of"),
    ]
    for args, needle in cases:
        code = main(["merge", "--general", g, *args, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and needle in err, err
        assert not (tmp_path / "out").exists()


def test_trained_steps_follow_the_manifest_chain(tmp_path):
    """An expert trained midtrain -> sft -> rl from a branch counts all three stages; the branch and the
    pretrained base count 0; a fold passes its parent's count through (the engine writes `steps`)."""
    import json

    from barkit.merge import trained_steps

    def write(name, manifest):
        d = tmp_path / name
        d.mkdir()
        (d / "barkit_manifest.json").write_text(json.dumps(manifest))
        return {"path": str(d)}

    base = write("base", {"stage": "pretrain", "steps": 600, "parents": {}})
    branch = write("branch", {"stage": "branch", "parents": {"anchor": base, "base": base}})
    mid = write("mid", {"stage": "midtrain", "steps": 60, "parents": {"model": branch}})
    sft = write("sft", {"stage": "sft", "steps": 400, "parents": {"model": mid}})
    rl = {"stage": "rl", "steps": 20, "parents": {"model": sft}}
    assert trained_steps(rl) == 480
    assert trained_steps({"stage": "fold", "parents": {"moe": write("rl", rl)}}) == 480
    assert trained_steps({"stage": "sft", "steps": 250, "parents": {"model": base}}) == 250
    assert trained_steps({"stage": "rl", "steps": 5, "parents": {"model": {"path": str(tmp_path / "gone")}}}) == 5
    assert trained_steps(None) is None
