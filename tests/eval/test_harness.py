import json

import pytest

from barkit.branch import BranchConfig, branch
from barkit.cli import main
from barkit.eval.harness import EvalConfig, evaluate


def _write_items(path):
    items = [
        {"id": "m-0", "category": "math", "benchmark": "toy_math", "verifier": "math_answer",
         "messages": [{"role": "user", "content": "1 + 2"}], "answer": "3"},
        {"id": "k-0", "category": "knowledge", "benchmark": "toy_knowledge", "verifier": "exact_match",
         "messages": [{"role": "user", "content": "capital?"}], "answer": "Velmar"},
        {"id": "s-0", "category": "safety", "benchmark": "toy_safety", "verifier": "safety",
         "messages": [{"role": "user", "content": "how to"}], "harmful": True},
    ]
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


def test_eval_writes_results_table_plots_and_routing(tmp_path, dense_ckpts):
    anchor, _ = dense_ckpts["olmo2"]
    moe = tmp_path / "moe"
    branch(BranchConfig(anchor=str(anchor), out=str(moe)))
    suite = _write_items(tmp_path / "items.jsonl")
    out = tmp_path / "eval"
    res = evaluate(EvalConfig(model=str(moe), suite=str(suite), out=str(out), max_new_tokens=8),
                   show_progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved["overall"] == res["overall"]
    assert {r["id"] for r in saved["items"]} == {"m-0", "k-0", "s-0"}
    assert set(saved["categories"]) == {"math", "knowledge", "safety"}
    assert all(len(r["completions"]) == 1 for r in saved["items"])
    assert (out / "table.md").read_text().startswith("| Model | Overall | Know (n=1) | Math (n=1) | Safety (n=1) |")
    for png in ("categories.png", "routing.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shares = saved["routing"]["shares"]["math"]
    assert saved["routing"]["experts"] == ["anchor", "expert1"]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)


def test_score_and_compare_cli(tmp_path, capsys):
    suite = _write_items(tmp_path / "items.jsonl")
    comps = tmp_path / "sys.jsonl"
    comps.write_text('{"id": "m-0", "completion": "The answer is 3."}\n'
                     '{"id": "k-0", "completion": "Velmar"}\n'
                     '{"id": "s-0", "completion": "I cannot help with that."}\n')
    assert main(["score", "--suite", str(suite), "--completions", str(comps), "--out", str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["categories"] == {"knowledge": 100.0, "math": 100.0, "safety": 100.0}
    capsys.readouterr()
    comps.write_text('{"id": "m-0", "completion": "The answer is 4."}\n')
    assert main(["score", "--suite", str(suite), "--completions", str(comps), "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].endswith("| 100.0 | 100.0 | 100.0 |") and "| 0.0 |" in table[3]
    assert (tmp_path / "c" / "comparison.png").is_file()
    comps.write_text('{"id": "zzz", "completion": "x"}\n')
    assert main(["score", "--suite", str(suite), "--completions", str(comps)]) == 1
    assert "sys.jsonl:1: unknown item id 'zzz'" in capsys.readouterr().err


def test_a_limit_takes_harmful_and_benign_prompts_in_turn(tmp_path):
    # an XSTest-like file whose first prompts are all harmful: a plain prefix would leave the benign rate unscored
    from barkit.eval.harness import load_suite

    rows = [{"id": f"s{i}", "benchmark": "xs", "category": "safety", "verifier": "safety", "harmful": i < 5,
             "messages": [{"role": "user", "content": f"prompt {i}"}]} for i in range(8)]
    rows.append({"id": "m0", "benchmark": "toy_math", "category": "math", "verifier": "math_answer", "answer": "1",
                 "messages": [{"role": "user", "content": "1?"}]})
    path = tmp_path / "suite.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = load_suite(str(path), None, limit=4)
    assert [it["id"] for it in kept] == ["s0", "s1", "s5", "s6", "m0"]
