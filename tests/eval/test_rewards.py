"""`barkit reward`: a prompt set's rewards shown row by row, as RL computes them, and bad inputs in one line."""

from __future__ import annotations

import json
from pathlib import Path

from barkit.cli import main

ROWS = Path(__file__).parents[1] / "train" / "data" / "open_instruct_rlvr.jsonl"
COMPLETIONS = ["48 + 24 = 72.", "$\\boxed{2}$", "\\boxed{[0, 2)}", "I think it is 2.", "Quiet water, running.",
               "the river runs slow.", "The river cut the bank.", "def add(a, b):\n    return a + b\n",
               "<answer>paris</answer>", "Shakespeare", "The answer is: yes"]


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_reward_prints_each_rows_verifier_answer_gold_and_reward(tmp_path, capsys):
    completions = _write(tmp_path / "c.jsonl", [{"completion": c} for c in COMPLETIONS])
    assert main(["reward", "--data", str(ROWS), "--completions", str(completions), "--out",
                 str(tmp_path / "r.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "| open_instruct_rlvr.jsonl:2 | math_answer | 2 | \\frac{1}{2} | 0.00 | wrong |" in out
    assert "| open_instruct_rlvr.jsonl:3 | math_answer | [0, 2) | [0,2) | 1.00 | verified |" in out
    assert "11 completions, 11 scored: mean reward 0.697; no answer 1, verifier errors 0" in out
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in records] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2 / 3, 1.0]
    assert records[3]["status"] == "no_answer" and records[0]["status"] == "exact"


def test_several_completions_per_row(tmp_path, capsys):
    rows = _write(tmp_path / "rows.jsonl", [{"messages": [{"role": "user", "content": "1/2?"}],
                                             "ground_truth": "\\frac{1}{2}", "dataset": "math"}])
    completions = _write(tmp_path / "c.jsonl", [{"completions": ["\\boxed{0.5}", "\\boxed{2}", "unsure"]}])
    assert main(["reward", "--data", str(rows), "--completions", str(completions)]) == 0
    assert "3 completions, 3 scored: mean reward 0.333; no answer 1" in capsys.readouterr().out


def test_bad_inputs_get_one_line(tmp_path, capsys):
    short = _write(tmp_path / "short.jsonl", [{"completion": "x"}])
    assert main(["reward", "--data", str(ROWS), "--completions", str(short)]) == 1
    assert capsys.readouterr().err.strip().endswith("short.jsonl: 1 completion lines for 11 data rows "
                                                    "(line k answers row k)")
    bad = _write(tmp_path / "bad.jsonl", [{"text": "x"}])
    rows = _write(tmp_path / "rows.jsonl", [{"messages": [{"role": "user", "content": "q"}], "ground_truth": "1",
                                             "dataset": "gsm8k"}])
    assert main(["reward", "--data", str(rows), "--completions", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl:1: needs 'completion' (a string)" in err
