"""Objectives by name: the registry, and the distillation objective (one file plus a registry entry)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from barkit.errors import BarkitError
from barkit.train import data
from barkit.train.metrics import read_metrics
from barkit.train.objectives import OBJECTIVES, get_objective
from barkit.train.objectives.distill import DistillObjective


def test_registry_holds_every_objective_and_names_unknown_ones():
    assert set(OBJECTIVES) == {"lm", "grpo", "distill"}
    assert get_objective("distill") is DistillObjective
    with pytest.raises(BarkitError, match="config key 'objective': unknown objective 'dpo' \\(known: lm, grpo"):
        get_objective("dpo")


def test_objective_settings_are_checked_before_anything_runs(tmp_path, moe_ckpts, data_files, run_stage):
    with pytest.raises(BarkitError, match="'objective_args.teachers': 2 teachers for 1 data files"):
        run_stage(tmp_path / "o", "sft", moe_ckpts["olmo2"], data_files["chat"], objective="distill",
                  objective_args={"teachers": ["a", "b"]})
    with pytest.raises(BarkitError, match="unknown config key 'objective_args.teacher'"):
        run_stage(tmp_path / "o", "sft", moe_ckpts["olmo2"], data_files["chat"], objective="distill",
                  objective_args={"teacher": "a"})
    with pytest.raises(BarkitError, match="the 'lm' objective takes no settings"):
        run_stage(tmp_path / "o", "sft", moe_ckpts["olmo2"], data_files["chat"], objective_args={"x": 1})
    assert not (tmp_path / "o").exists()


@torch.no_grad()
def _entropy_at_targets(model_dir, chat_file, seq_len) -> tuple[float, int]:
    """Summed entropy of the model's next-token distribution at every assistant target, chats one at a time."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    total, count = 0.0, 0
    for example in data.tokenize_chats(chat_file, tokenizer, seq_len)[0]:
        logp = torch.log_softmax(model(torch.tensor([example.input_ids])).logits[0].float(), -1)
        targets = (torch.tensor(example.labels[1:]) != data.IGNORE).nonzero().flatten()
        total += float(-(logp[targets].exp() * logp[targets]).sum())
        count += len(targets)
    return total, count


def test_distilling_a_model_from_itself_gives_its_entropy_and_no_gradient(tmp_path, moe_ckpts, data_files,
                                                                           run_stage):
    """Cross-entropy against one's own distribution is its entropy, and its gradient vanishes. One step over
    all 40 chats of the file (packed, as SFT trains), checked against each chat's entropy computed alone."""
    model = moe_ckpts["olmo2"]
    common = dict(steps=1, batch_size=40, optim={"lr": 1e-9})
    out = run_stage(tmp_path / "self", "sft", model, data_files["chat"], objective="distill",
                    objective_args={"teachers": [str(model)]}, **common)
    row = read_metrics(out / "metrics.jsonl")[-1]
    entropy, targets = _entropy_at_targets(model, data_files["chat"], 32)
    assert row["targets"] == targets
    assert row["distill"] == pytest.approx(entropy / targets, rel=2e-3)  # teacher probabilities kept in fp16
    lm = read_metrics(run_stage(tmp_path / "lm", "sft", model, data_files["chat"], **common) / "metrics.jsonl")[-1]
    assert row["loss"] == pytest.approx(lm["loss"], rel=1e-6)  # the same batch, the same hard-label loss
    assert row["grad_norm"] < 0.01 * lm["grad_norm"]


def test_router_distillation_learns_the_teacher_and_moves_only_the_router(tmp_path, moe_ckpts, data_files,
                                                                          run_stage):
    """The teacher is the student's expert 1 alone (folded dense): the router should learn to send tokens there.
    The distillation loss is cross-entropy = the teacher's entropy + KL(teacher || student); the KL all but goes."""
    from barkit.merge import fold_expert

    student = moe_ckpts["olmo2"]
    teacher = fold_expert(student, tmp_path / "expert1", 1)
    out = run_stage(tmp_path / "routed", "router", student, data_files["chat"], objective="distill", steps=30,
                    batch_size=40, objective_args={"teachers": [str(teacher)]}, mixture={"sample_fraction": 1.0},
                    optim={"lr": 0.5})
    rows = read_metrics(out / "metrics.jsonl")
    entropy, targets = _entropy_at_targets(teacher, data_files["chat"], 32)
    kl_before, kl_after = rows[0]["distill"] - entropy / targets, rows[-1]["distill"] - entropy / targets
    assert kl_before > 1e-3 and kl_after < 0.1 * kl_before
    before = dict(AutoModelForCausalLM.from_pretrained(str(student)).named_parameters())
    after = dict(AutoModelForCausalLM.from_pretrained(str(out)).named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".mlp.gate." in n for n in changed), sorted(changed)[:3]
