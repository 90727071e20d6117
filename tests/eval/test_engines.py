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
