"""GRPO with vLLM rollouts: after every optimizer step the engine holds the trainer's weights."""

import json

import torch
from transformers import AutoModelForCausalLM

from barkit.arch import ARCHITECTURES
from barkit.checkpoint import CheckpointReader
from barkit.config import load_config
from barkit.eval import verifiers
from barkit.train import StageConfig, train
from barkit.train.vllm_rollout import VLLMRollout
from barkit.vllm_engine import VLLMEngine

STOPS = [0, 5]
WORDS = ["fox", "dog", "brown", "lazy", "quick", "jumps", "over", "the"]


def _rl_config(model, data, out, **rl):
    return load_config(StageConfig, values={
        "stage": "rl", "model": str(model), "data": [data], "out": str(out), "steps": 3, "progress": False,
        "sequences": {"seq_len": 64}, "optim": {"lr": 1e-2}, "distributed": {"threads": 1},
        "rl": {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 8, "engine": "vllm", **rl}})


def count_e(completions, target, **_):
    """A dense test reward: the share of characters equal to the target letter."""
    return [min(1.0, c.count(t) / max(len(c), 1) * 4) if c else 0.0 for c, t in zip(completions, target)]


def test_after_k_grpo_steps_the_engine_answers_as_the_trained_checkpoint(tmp_path, family_ckpts, prompts, hf_greedy,
                                                                         write_jsonl, monkeypatch):
    monkeypatch.setitem(verifiers.VERIFIERS, "count_e", count_e)
    monkeypatch.setitem(verifiers.VERIFIER_COLUMNS, "count_e", ("target",))
    kept, sent = [], []
    monkeypatch.setattr(VLLMRollout, "close", lambda self: kept.append(self))  # keep the engine to inspect it
    push = VLLMEngine.push

    def recording_push(self, tensors):
        sent.append(sorted(tensors))
        return push(self, tensors)

    monkeypatch.setattr(VLLMEngine, "push", recording_push)
    data = write_jsonl(tmp_path / "rl.jsonl", [{"prompt": [{"role": "user", "content": f"name the {w}"}],
                                                "verifier": "count_e", "target": "e"}
                                               for w in WORDS])
    parent = family_ckpts["flexolmo-2x"]
    out = train(_rl_config(parent, data, tmp_path / "out"))
    (rollout,) = kept
    try:
        trained = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
        hf = hf_greedy(trained, prompts, 12, STOPS)
        engine = [(s[0].token_ids, s[0].logprobs) for s in rollout.engine.generate(prompts, max_new_tokens=12,
                                                                                   stop_ids=STOPS)]
        assert [t for t, _ in engine] == [t for t, _ in hf]
        assert max(abs(a - b) for (_, x), (_, y) in zip(hf, engine) for a, b in zip(x, y)) < 1e-4
    finally:
        rollout.engine.close()

    spec, old, new = ARCHITECTURES["olmo2"], CheckpointReader(parent), CheckpointReader(out)
    assert not torch.equal(old.get(spec.expert_key("up", 0, 1)), new.get(spec.expert_key("up", 0, 1)))  # it trained
    assert len(sent) >= 3 * 2  # every step, layer by layer
    assert not [k for keys in sent for k in keys if (p := spec.parse_expert_key(k)) and p[2] == 0]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 3 and all(0 <= r["engine_logp_diff"] < 1e-3 and r["sync_s"] > 0 for r in steps)


def test_two_fsdp_processes_keep_their_engines_equal_to_the_sharded_trainer(tmp_path, family_ckpts, write_jsonl):
    """torchrun, 2 CPU processes (gloo), FSDP2: each rank samples from its own engine and, after every step,
    gathers the sharded trainable tensors layer by layer and pushes them. The engines' log-probabilities of their
    own samples stay those of the trainer (engine_logp_diff ~ 1e-7 in fp32): with a stale or wrong sync they
    would be off by the step's update from step 2 on."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    data = write_jsonl(tmp_path / "rl.jsonl", [
        {"prompt": [{"role": "user", "content": f"say {w}"}], "verifier": "instruction",
         "constraints": [{"type": "length_constraints:number_words", "kwargs": {"num_words": 3,
                                                                                 "relation": "less than"}}]}
        for w in WORDS])
    config = tmp_path / "fsdp.yaml"
    config.write_text(yaml.safe_dump({
        "stage": "rl", "model": str(family_ckpts["flexolmo-2x"]), "data": [data], "out": str(tmp_path / "out"),
        "steps": 3, "progress": False, "sequences": {"seq_len": 64}, "optim": {"lr": 1e-2},
        "distributed": {"strategy": "fsdp", "threads": 1},
        "rl": {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 8, "engine": "vllm",
               "engine_kv_cache_mb": 64}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), "-m", "barkit.cli",
                             "adapt", "--config", str(config)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 3 and all(r["engine_logp_diff"] < 1e-4 and r["sync_s"] > 0 for r in steps)
    assert any(r["grad_norm"] > 0 for r in steps)
    spec, old, new = ARCHITECTURES["olmo2"], CheckpointReader(family_ckpts["flexolmo-2x"]), CheckpointReader(
        tmp_path / "out")
    assert torch.equal(old.get(spec.expert_key("up", 0, 0)), new.get(spec.expert_key("up", 0, 0)))  # the anchor
    assert not torch.equal(old.get(spec.expert_key("up", 0, 1)), new.get(spec.expert_key("up", 0, 1)))


def test_without_the_sync_the_drift_shows(tmp_path, family_ckpts, write_jsonl, monkeypatch):
    """The control for the two tests above: an engine that is never synced samples from the starting weights, and
    engine_logp_diff shows it from the second step on."""
    monkeypatch.setitem(verifiers.VERIFIERS, "count_e", count_e)
    monkeypatch.setitem(verifiers.VERIFIER_COLUMNS, "count_e", ("target",))
    monkeypatch.setattr(VLLMRollout, "sync", lambda self: None)
    data = write_jsonl(tmp_path / "rl.jsonl", [{"prompt": [{"role": "user", "content": f"name the {w}"}],
                                                "verifier": "count_e", "target": "e"} for w in WORDS])
    out = train(_rl_config(family_ckpts["flexolmo-2x"], data, tmp_path / "out"))
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    drift = [r["engine_logp_diff"] for r in steps if "loss" in r]
    assert drift[0] < 1e-4 and min(drift[1:]) > 1e-3, drift
