"""Data parallel on CPU: `accelerate launch` with 2 processes (gloo) trains an SFT stage."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from barkit.arch import ARCHITECTURES, ROLES
from barkit.checkpoint import CheckpointReader
from barkit.train.metrics import read_metrics

DDP_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "ddp.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate() -> str:
    path = Path(sys.executable).with_name("accelerate")
    return str(path) if path.exists() else shutil.which("accelerate")


@pytest.mark.skipif(_accelerate() is None, reason="accelerate CLI not installed")
def test_two_cpu_processes_end_identical_with_the_anchor_unchanged(tmp_path, moe_ckpts, data_files, run_stage):
    parent, out = moe_ckpts["olmo2"], tmp_path / "ddp"
    args = ["--stage", "sft", "--model", str(parent), "--data", data_files["chat"], "--out", str(out),
            "--steps", "3", "--batch-size", "8", "--sequences.seq-len", "32", "--optim.lr", "1e-2",
            "--distributed.threads", "1", "--progress", "false"]
    # the documented launch config (MULTI_GPU = torchrun); barkit runs on CPU (gloo) when no GPU is present
    launch = [_accelerate(), "launch", "--config_file", str(DDP_CONFIG), "--num_processes", "2",
              "--main_process_port", str(_free_port()), "-m", "barkit.cli", "adapt", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    manifest = json.loads((out / "barkit_manifest.json").read_text())
    replicas = manifest["data_parallel"]
    assert replicas["world_size"] == 2
    assert len(replicas["rank_weight_sha256"]) == 2 and len(set(replicas["rank_weight_sha256"])) == 1

    spec, old, new = ARCHITECTURES["olmo2"], CheckpointReader(parent), CheckpointReader(out)
    for layer in range(2):
        for role in ROLES:
            assert torch.equal(old.get(spec.expert_key(role, layer, 0)), new.get(spec.expert_key(role, layer, 0)))
            assert not torch.equal(old.get(spec.expert_key(role, layer, 1)), new.get(spec.expert_key(role, layer, 1)))
        assert torch.equal(old.get(spec.router_key(layer))[0], new.get(spec.router_key(layer))[0])

    # the loss is a mean over the whole global batch, so one process sees the same numbers
    single = run_stage(tmp_path / "single", "sft", parent, data_files["chat"], steps=3, batch_size=8,
                       sequences={"seq_len": 32}, optim={"lr": 1e-2})
    two, one = read_metrics(out / "metrics.jsonl"), read_metrics(single / "metrics.jsonl")
    assert [r["targets"] for r in two] == [r["targets"] for r in one]
    assert abs(two[0]["loss"] - one[0]["loss"]) < 1e-5
    assert all(abs(a["loss"] - b["loss"]) < 1e-3 for a, b in zip(two, one))
