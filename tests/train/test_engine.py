"""End-to-end stage runs: what changes, what must not, and what the output directory holds."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from barkit.arch import ARCHITECTURES, ROLES
from barkit.checkpoint import CheckpointReader
from barkit.errors import BarkitError
from barkit.train.checkpointing import work_dir

# (parameter-name suffix, rows that must change); every other tensor / row must stay bit-identical.
EXPERT_1 = {"mlp.experts.gate_up_proj": [1], "mlp.experts.down_proj": [1], "mlp.gate.weight": [1]}
CHANGES = {
    "midtrain": {**EXPERT_1},
    "sft": {**EXPERT_1, "model.embed_tokens.weight": None, "lm_head.weight": None},
    "rl": {**EXPERT_1, "model.embed_tokens.weight": None, "lm_head.weight": None, "self_attn": None,
           "norm": None},
}


def _params(path):
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return dict(model.named_parameters())


def _expected_rows(name, stage):
    """None: whole tensor changes; list: these rows change; []: nothing changes."""
    for suffix, rows in CHANGES[stage].items():
        if suffix in name:
            return rows
    return []


def _check_changes(before, after, stage):
    assert before.keys() == after.keys()
    for name, old in before.items():
        new, rows = after[name], _expected_rows(name, stage)
        if rows is None:
            assert not torch.equal(old, new), f"{name} did not change"
            continue
        for row in range(old.shape[0]):
            if row in rows:
                assert not torch.equal(old[row], new[row]), f"{name}[{row}] did not change"
            else:
                assert torch.equal(old[row], new[row]), f"{name}[{row}] changed"


def _data_for(stage, data_files):
    return {"midtrain": data_files["text"], "sft": data_files["chat"], "rl": data_files["rl"]}[stage]


@pytest.mark.parametrize("family", ["olmo2", "llama"])
@pytest.mark.parametrize("stage", ["midtrain", "sft", "rl"])
def test_stage_trains_exactly_its_declared_set(tmp_path, moe_ckpts, data_files, run_stage, test_verifier,
                                               stage, family):
    if family == "llama" and stage == "rl":
        pytest.skip("rl's parameter set is covered on olmo2; llama covers midtrain and sft")
    parent = moe_ckpts[family]
    out = run_stage(tmp_path / "out", stage, parent, _data_for(stage, data_files))
    _check_changes(_params(parent), _params(out), stage)

    # the anchor on disk: expert 0's three projections and router row 0, bit-identical
    spec = ARCHITECTURES[family]
    old, new = CheckpointReader(parent), CheckpointReader(out)
    assert set(old.keys()) == set(new.keys())
    for layer in range(old.config["num_hidden_layers"]):
        for role in ROLES:
            key = spec.expert_key(role, layer, 0)
            assert torch.equal(old.get(key), new.get(key)), key
            assert not torch.equal(old.get(spec.expert_key(role, layer, 1)), new.get(spec.expert_key(role, layer, 1)))
        router = spec.router_key(layer)
        assert torch.equal(old.get(router)[0], new.get(router)[0])
    assert not work_dir(out).exists()  # the resumable state is removed after success


def test_output_directory_contents(tmp_path, moe_ckpts, data_files, run_stage):
    parent = moe_ckpts["olmo2"]
    out = run_stage(tmp_path / "math", "sft", parent, data_files["chat"], expert_name="math", seed=5, steps=3,
                    mixture={"general_data": [data_files["general"]], "general_ratio": 0.5})
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "barkit_config.yaml", "barkit_manifest.json",
            "metrics.jsonl", "curves.png"} <= names
    manifest = json.loads((out / "barkit_manifest.json").read_text())
    assert manifest["stage"] == "sft"
    assert manifest["seed"] == 5
    assert manifest["experts"] == ["anchor", "math"]
    assert manifest["parents"]["model"]["weights_sha256"] == CheckpointReader(parent).fingerprint()
    assert set(manifest["data"]) == {str(Path(data_files[k]).resolve()) for k in ("chat", "general")}
    assert manifest["trainable"]["declared"] == ["expert:1", "router:1", "embeddings", "lm_head"]
    # 2 layers x (gate_up 128x32 + down 32x64 + router 32) + embeddings and lm_head 300x32 each
    assert manifest["trainable"]["params"] == 2 * (128 * 32 + 32 * 64 + 32) + 2 * 300 * 32
    size = (out / "model.safetensors").stat().st_size
    assert manifest["weights_sha256"]["files"]["model.safetensors"]["size"] == size
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    config, parent_config = (json.loads((d / "config.json").read_text()) for d in (out, parent))
    drift = {k for k, v in parent_config.items() if config.get(k) != v and k != "transformers_version"}
    assert drift == set()  # use_cache, rope, token ids... exactly as the parent had them
    resolved = (out / "barkit_config.yaml").read_text()
    assert "  lr: 0.01" in resolved and "  kind: linear" in resolved and "  general_ratio: 0.5" in resolved


def test_router_stage_changes_only_router_weights(tmp_path, dense_ckpts, data_files, run_stage):
    """Router training of an N-expert MoE: every router row trains (row 0 too), nothing else moves."""
    from transformers import FlexOlmoConfig

    from barkit.tiny import tiny_config, tiny_tokenizer

    dense = tiny_config("olmo2").to_dict()
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "pad_token_id", "eos_token_id", "bos_token_id", "tie_word_embeddings")
    torch.manual_seed(0)
    moe = AutoModelForCausalLM.from_config(FlexOlmoConfig(**{k: dense[k] for k in keep}, num_experts=3,
                                                          num_experts_per_tok=3, norm_topk_prob=False))
    moe.save_pretrained(tmp_path / "moe3")
    tiny_tokenizer().save_pretrained(tmp_path / "moe3")
    out = run_stage(tmp_path / "routed", "router", tmp_path / "moe3",
                    [data_files["chat"], data_files["general"]],
                    mixture={"sample_fraction": 0.5, "min_rows_per_file": 4})
    before, after = _params(tmp_path / "moe3"), _params(out)
    for name, old in before.items():
        if name.endswith("mlp.gate.weight"):
            assert all(not torch.equal(old[r], after[name][r]) for r in range(3)), name
        else:
            assert torch.equal(old, after[name]), name
    manifest = json.loads((out / "barkit_manifest.json").read_text())
    assert manifest["trainable"]["params"] == 2 * 3 * 32


def test_dense_model_trains_with_explicit_trainable(tmp_path, dense_ckpts, data_files, run_stage):
    """Pretraining (all parameters) and the anchor's own SFT take dense checkpoints."""
    anchor, _ = dense_ckpts["olmo2"]
    out = run_stage(tmp_path / "pre", "pretrain", anchor, data_files["text"], steps=2)
    before, after = _params(anchor), _params(out)
    assert all(not torch.equal(before[n], after[n]) for n in before)
    out = run_stage(tmp_path / "anchor-sft", "sft", anchor, data_files["chat"], trainable=["all"], steps=2)
    assert json.loads((out / "barkit_manifest.json").read_text())["arch"] == "olmo2"


def test_sft_learns_a_mapping(tmp_path, moe_ckpts, data_files, run_stage):
    """A trivially learnable mapping (n + 1 -> the next number) reaches low loss and exact greedy answers."""
    out = run_stage(tmp_path / "learned", "sft", moe_ckpts["olmo2"], data_files["chat"], steps=60,
                    optim={"lr": 2e-2}, batch_size=20, schedule={"warmup_steps": 5})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] > 3.0
    assert sum(r["loss"] for r in rows[-5:]) / 5 < 0.5
    from barkit.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    hits = 0
    for i in range(10):
        prompt = tok.apply_chat_template([{"role": "user", "content": f"{i} + 1"}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)
        gen = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=1)
        hits += tok.decode(gen[0, prompt["input_ids"].shape[1]:]).split("<|end|>")[0] == str(i + 1)
    assert hits >= 8


def test_rl_raises_reward(tmp_path, moe_ckpts, data_files, run_stage, test_verifier):
    out = run_stage(tmp_path / "rl", "rl", moe_ckpts["olmo2"], data_files["rl"], steps=30, optim={"lr": 1e-2},
                    rl={"prompts_per_step": 4, "num_generations": 8, "max_new_tokens": 8,
                        "eval_data": data_files["rl"], "eval_every": 10})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in rows if "reward" in r]
    assert len(rewards) == 30
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2
    evals = [(r["step"], r["eval_reward"]) for r in rows if "eval_reward" in r]
    assert [s for s, _ in evals] == [0, 10, 20, 30]
    assert evals[-1][1] > evals[0][1]
    assert (out / "curves.png").stat().st_size > 0


def test_rl_with_dynamic_sampling_trains_the_rl_set_on_kept_groups(tmp_path, moe_ckpts, data_files, run_stage,
                                                                   test_verifier):
    parent = moe_ckpts["olmo2"]
    out = run_stage(tmp_path / "rl", "rl", parent, data_files["rl"], steps=3,
                    rl={"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 6,
                        "dynamic_sampling": True, "max_sampling_rounds": 3})
    _check_changes(_params(parent), _params(out), "rl")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert len(steps) == 3
    assert all(1 <= r["sampling_rounds"] <= 3 and 0 <= r["kept_groups"] <= 4 for r in steps)


def test_sampled_held_out_reward_is_logged_and_leaves_training_untouched(tmp_path, moe_ckpts, data_files,
                                                                          run_stage, test_verifier):
    rl = {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 6, "eval_data": data_files["rl"],
          "eval_every": 1}
    plain = run_stage(tmp_path / "plain", "rl", moe_ckpts["olmo2"], data_files["rl"], steps=2, rl=rl)
    sampled = run_stage(tmp_path / "sampled", "rl", moe_ckpts["olmo2"], data_files["rl"], steps=2,
                        rl={**rl, "eval_samples": 3})
    rows = [json.loads(line) for line in (sampled / "metrics.jsonl").read_text().splitlines()]
    values = [(r["step"], r["eval_reward_sampled"]) for r in rows if "eval_reward_sampled" in r]
    assert [s for s, _ in values] == [0, 1, 2] and all(0.0 <= v <= 1.0 for _, v in values)
    # evaluation samples under its own seed: the trained weights equal those of the greedy-only run
    digest = [json.loads((p / "barkit_manifest.json").read_text())["data_parallel"]["rank_weight_sha256"]
              for p in (plain, sampled)]
    assert digest[0] == digest[1]


def test_existing_output_and_stale_checkpoints_are_refused(tmp_path, moe_ckpts, data_files, run_stage):
    out = run_stage(tmp_path / "o", "midtrain", moe_ckpts["olmo2"], data_files["text"], steps=1)
    with pytest.raises(BarkitError, match="already exists"):
        run_stage(out, "midtrain", moe_ckpts["olmo2"], data_files["text"], steps=1)
    work_dir(tmp_path / "p").mkdir()
    with pytest.raises(BarkitError, match="checkpoints of an earlier run exist"):
        run_stage(tmp_path / "p", "midtrain", moe_ckpts["olmo2"], data_files["text"], steps=1)


def test_weight_decay_never_reaches_the_anchor(tmp_path, moe_ckpts, data_files, run_stage):
    """AdamW's decoupled decay would shrink expert 0 (it shares a tensor with expert 1): restored each step."""
    parent = moe_ckpts["llama"]
    out = run_stage(tmp_path / "wd", "midtrain", parent, data_files["text"], steps=3, optim={"weight_decay": 0.5})
    _check_changes(_params(parent), _params(out), "midtrain")


@pytest.mark.parametrize("family", ["olmo2", "llama"])
def test_packed_chats_train_like_padded_ones(tmp_path, moe_ckpts, data_files, run_stage, family):
    """Packing is only a speed-up: per-chat attention and positions make the loss the padded batch's."""
    runs = {pack: run_stage(tmp_path / str(pack), "sft", moe_ckpts[family], [data_files["chat"], data_files["general"]],
                            steps=3, sequences={"pack_chats": pack}) for pack in (True, False)}
    packed, padded = ([json.loads(x) for x in (runs[p] / "metrics.jsonl").read_text().splitlines()] for p in runs)
    assert [r["targets"] for r in packed] == [r["targets"] for r in padded]
    assert all(abs(a["loss"] - b["loss"]) < 1e-4 * b["loss"] for a, b in zip(packed, padded))
    assert packed[0]["tokens"] == padded[0]["tokens"]


def _route_probabilities(path, data_file):
    """Mean router probability of expert 1 over every layer and token of each chat in `data_file`."""
    from transformers import AutoTokenizer

    from barkit.train.data import tokenize_chats

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    examples, _ = tokenize_chats(data_file, tokenizer, 32)
    with torch.no_grad():
        probs = [torch.cat([layer.softmax(-1)[:, 1] for layer in model(
            input_ids=torch.tensor([e.input_ids]), output_router_logits=True).router_logits]).mean()
            for e in examples]
    return float(torch.stack(probs).mean())


def test_route_supervision_sends_domain_tokens_to_the_expert_and_general_ones_to_the_anchor(
        tmp_path, moe_ckpts, data_files, run_stage):
    """With the router loss, router row 1 learns to take the domain's chats and leave general chats to the
    anchor (expert 0), whose weights stay bit-identical; the loss is logged and falls."""
    parent = moe_ckpts["olmo2"]
    common = dict(mixture={"general_data": [data_files["general"]], "general_ratio": 0.5}, steps=12,
                  optim={"lr": 3e-2}, seed=3)
    out = run_stage(tmp_path / "routed", "sft", parent, data_files["chat"], route_supervision=1.0, **common)
    _check_changes(_params(parent), _params(out), "sft")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["route_loss"] < 0.5 * rows[0]["route_loss"]
    domain, general = _route_probabilities(out, data_files["chat"]), _route_probabilities(out, data_files["general"])
    assert domain > 0.8 and general < 0.2, (domain, general)
    plain = run_stage(tmp_path / "plain", "sft", parent, data_files["chat"], **common)
    assert "route_loss" not in json.loads((plain / "metrics.jsonl").read_text().splitlines()[-1])
    assert _route_probabilities(plain, data_files["general"]) > 0.3  # without the loss nothing sends general away


def test_route_supervision_needs_an_moe_and_a_midtrain_or_sft_stage(tmp_path, dense_ckpts, moe_ckpts, data_files,
                                                                   run_stage):
    with pytest.raises(BarkitError, match="needs a mixture-of-experts model"):
        run_stage(tmp_path / "d", "sft", dense_ckpts["olmo2"][0], data_files["chat"], trainable=["all"],
                  route_supervision=1.0)
    with pytest.raises(BarkitError, match="only midtrain and sft"):
        run_stage(tmp_path / "r", "rl", moe_ckpts["olmo2"], data_files["rl"], route_supervision=1.0)
