"""A run SIGKILLed between checkpoints and resumed ends bit-identical to an uninterrupted run."""

import json
import multiprocessing
import os
import signal

import pytest
import torch

from barkit.checkpoint import CheckpointReader
from barkit.config import load_config
from barkit.errors import BarkitError
from barkit.train import StageConfig, train
from barkit.train.checkpointing import checkpoints, work_dir
from barkit.train.metrics import TIMING_KEYS, read_metrics


def _child(cfg: dict, kill_at: int) -> None:
    """Run a stage and SIGKILL this process right after step `kill_at`: no clean-up code runs."""
    def on_step(step, row):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(StageConfig, values=cfg), on_step=on_step)


# fork is how the child shares this process's imports (seconds saved per test); CUDA cannot be forked
needs_fork = pytest.mark.skipif(torch.cuda.is_available(), reason="forked children cannot use CUDA")


def _run_killed(cfg: dict, kill_at: int) -> int:
    """A forked child (a real process, imports shared with the test) that is killed mid-run."""
    child = multiprocessing.get_context("fork").Process(target=_child, args=(cfg, kill_at))
    child.start()
    child.join(300)
    return child.exitcode


STAGES = {
    "sft": dict(steps=8, batch_size=8, sequences={"seq_len": 32}, optim={"lr": 1e-2}, schedule={"warmup_steps": 2}),
    "rl": dict(steps=6, batch_size=8, sequences={"seq_len": 40}, optim={"lr": 1e-2},
               rl={"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 8}),
}


def _config(stage, model, data, out, **extra):
    return {"stage": stage, "model": str(model), "data": [data], "out": str(out), "distributed": {"threads": 1},
            "progress": False, "checkpoint": {"save_every": 3}, **STAGES[stage], **extra}


def _tensors(path):
    reader = CheckpointReader(path)
    return {k: reader.get(k) for k in reader.keys()}


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@needs_fork
@pytest.mark.parametrize("stage", ["sft", "rl"])
def test_sigkill_and_resume_is_bit_identical(tmp_path, moe_ckpts, data_files, run_stage, test_verifier, stage):
    model, data = moe_ckpts["olmo2"], data_files["chat" if stage == "sft" else "rl"]
    reference = run_stage(**_config(stage, model, data, tmp_path / "reference"))

    out = tmp_path / "killed"
    cfg = _config(stage, model, data, out)
    assert _run_killed(cfg, 5) == -signal.SIGKILL
    assert not out.exists()
    assert [step for step, _ in checkpoints(work_dir(out))] == [3]
    assert [r["step"] for r in read_metrics(work_dir(out) / "metrics.jsonl")] == [1, 2, 3, 4, 5]

    run_stage(**{**cfg, "checkpoint": {"save_every": 3, "resume": True}})
    ref, got = _tensors(reference), _tensors(out)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert _without_timing(read_metrics(out / "metrics.jsonl")) == _without_timing(
        read_metrics(reference / "metrics.jsonl"))
    assert not work_dir(out).exists()


@needs_fork
def test_resume_refuses_a_changed_config(tmp_path, moe_ckpts, data_files, run_stage):
    cfg = _config("sft", moe_ckpts["olmo2"], data_files["chat"], tmp_path / "o", steps=4)
    assert _run_killed(cfg, 4) == -signal.SIGKILL
    with pytest.raises(BarkitError, match="cannot resume: 'optim.lr' differs from the interrupted run"):
        run_stage(**{**cfg, "optim": {"lr": 5e-3}, "checkpoint": {"save_every": 3, "resume": True}})
    out = run_stage(**{**cfg, "checkpoint": {"resume": True, "save_every": 0}})  # execution settings may change
    assert json.loads((out / "barkit_manifest.json").read_text())["steps"] == 4
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]


@needs_fork
def test_resume_with_overwrite_discards_checkpoints_of_another_config(tmp_path, moe_ckpts, data_files, run_stage):
    cfg = _config("sft", moe_ckpts["olmo2"], data_files["chat"], tmp_path / "o", steps=4)
    assert _run_killed(cfg, 4) == -signal.SIGKILL
    out = run_stage(**{**cfg, "optim": {"lr": 5e-3}, "checkpoint": {"save_every": 3, "resume": True},
                       "overwrite": True})
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[0]["lr"] == 5e-3 / 2  # trained from step 0


def test_resume_without_checkpoints_starts_fresh(tmp_path, moe_ckpts, data_files, run_stage):
    out = run_stage(tmp_path / "o", "midtrain", moe_ckpts["olmo2"], data_files["text"], steps=2,
                    checkpoint={"resume": True})
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
