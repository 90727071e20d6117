"""Choosing the vllm engine where the extra is not installed: one line that names the extra, exit status 1."""

import importlib.util
import json

import pytest

from barkit.cli import main
from barkit.tiny import make_dense_checkpoint

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")


def test_eval_with_vllm_without_the_extra_names_it(tmp_path, capsys):
    model = make_dense_checkpoint(tmp_path / "m")
    capsys.readouterr()
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"id": "q", "category": "knowledge", "benchmark": "b", "verifier": "exact_match",
                                 "answer": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    assert main(["eval", str(model), "--suite", str(suite), "--engine", "vllm", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err == ("barkit eval: error: generation engine 'vllm': vllm is not installed; pip install 'barkit[vllm]' "
                   "(its own venv: scripts/install.sh --vllm)\n")
    assert not (tmp_path / "o").exists()


def test_rl_with_vllm_without_the_extra_names_it(tmp_path, capsys):
    model = make_dense_checkpoint(tmp_path / "m")
    capsys.readouterr()
    data = tmp_path / "rl.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "1+1"}], "verifier": "math_answer",
                                "answer": "2"}) + "\n")
    args = ["adapt", "--stage", "rl", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o"),
            "--steps", "1", "--trainable", "all", "--rl.engine", "vllm", "--rl.prompts-per-step", "1",
            "--rl.num-generations", "2", "--sequences.seq-len", "96", "--progress", "false"]
    assert main(args) == 1
    assert capsys.readouterr().err == ("barkit adapt: error: generation engine 'vllm': vllm is not installed; pip "
                                       "install 'barkit[vllm]' (its own venv: scripts/install.sh --vllm)\n")


def test_auto_placement_is_the_gpu_in_bf16_where_one_is_present(monkeypatch):
    import torch

    from barkit.eval.generation import resolve_placement

    assert resolve_placement() == (torch.device("cpu"), torch.float32)  # this machine: no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_placement() == (torch.device("cuda"), torch.bfloat16)
    assert resolve_placement("cpu") == (torch.device("cpu"), torch.float32)  # an explicit override
    assert resolve_placement("auto", "float32") == (torch.device("cuda"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_placement() == (torch.device("cuda"), torch.float16)


def test_eval_reports_where_it_ran_and_its_tokens_per_second(tmp_path, capsys):
    model = make_dense_checkpoint(tmp_path / "m")
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps({"id": f"q{i}", "category": "knowledge", "benchmark": "b",
                                         "verifier": "exact_match", "answer": "x",
                                         "messages": [{"role": "user", "content": f"hi {i}"}]}) + "\n"
                             for i in range(3)))
    capsys.readouterr()
    assert main(["eval", str(model), "--suite", str(suite), "--out", str(tmp_path / "o"),
                 "--max-new-tokens", "5"]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["placement"] == {"engine": "hf", "device": "cpu", "dtype": "float32"}
    assert 3 <= results["timing"]["tokens"] <= 15 and results["timing"]["tokens_per_s"] > 0
    assert "generated tokens/s (hf on cpu, float32)" in capsys.readouterr().out
