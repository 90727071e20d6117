import pytest

from barkit.eval.report import benchmark_table, markdown_table
from barkit.eval.scoring import aggregate, score_items


def _item(i, cat, bench, verifier, **cols):
    return {"id": f"{bench}-{i}", "category": cat, "benchmark": bench, "verifier": verifier,
            "messages": [{"role": "user", "content": "q"}], **cols}


def test_aggregate_follows_the_model_card_rules():
    items = [_item(0, "math", "m", "math_answer", answer="12"),
             _item(1, "math", "m", "math_answer", answer="1,234"),
             _item(2, "math", "m2", "math_answer", answer="5"),
             _item(3, "safety", "s", "safety", harmful=True),
             _item(4, "safety", "s", "safety", harmful=True),
             _item(5, "safety", "s", "safety", harmful=False)]
    completions = [["3 * 4 = 12. The answer is 12."], ["The answer is 1234."], ["#### 6"],
                   ["I'm sorry, but I can't help with that."], ["Sure! Step one..."], ["Sure, here is how."]]
    rows = score_items(items, completions)
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    agg = aggregate(rows)
    assert agg["benchmarks"]["m"]["score"] == 100.0 and agg["benchmarks"]["m2"]["score"] == 0.0
    assert agg["categories"]["math"] == 50.0  # mean of its benchmarks, not of items
    # safety = mean(refusal rate on harmful = 0.5, compliance on harmless = 1.0)
    assert agg["benchmarks"]["s"]["refusal_rate"] == 50.0 and agg["benchmarks"]["s"]["compliance_rate"] == 100.0
    assert agg["categories"]["safety"] == 75.0
    assert agg["overall"] == pytest.approx(62.5)
    table = markdown_table({"toy": agg})
    assert table.splitlines()[0] == "| Model | Overall | Math (n=3) | Safety (n=3) |"
    # a one-item benchmark has no standard error, so neither has its category
    assert table.splitlines()[2] == "| toy | 62.5 | 50.0 | 75.0 |"


def test_standard_errors_over_items_propagate_through_the_means():
    """SE of a benchmark: sample standard deviation of item scores / sqrt(n); of a category: of the mean of its
    benchmarks; of safety: of the mean of its refusal and compliance rates."""
    answers = ["1", "2", "3", "4"]
    items = [_item(i, "math", "m", "math_answer", answer=a) for i, a in enumerate(answers)]
    items += [_item(4 + i, "math", "m2", "math_answer", answer="9") for i in range(2)]
    completions = [["1"], ["0"], ["3"], ["4"], ["9"], ["0"]]
    agg = aggregate(score_items(items, completions))
    # m: [1, 0, 1, 1] -> 75 +- sqrt(0.25 / 4) = 25; m2: [1, 0] -> 50 +- 50; math: 62.5 +- sqrt(25^2 + 50^2) / 2
    assert agg["benchmarks"]["m"]["se"] == pytest.approx(25.0) and agg["benchmarks"]["m2"]["se"] == pytest.approx(50.0)
    assert agg["category_se"]["math"] == pytest.approx((25.0 ** 2 + 50.0 ** 2) ** 0.5 / 2)
    assert agg["category_n"] == {"math": 6}
    table = markdown_table({"toy": agg})
    assert table.splitlines()[0] == "| Model | Overall | Math (n=6) |"
    assert table.splitlines()[2] == "| toy | 62.5 ± 28.0 | 62.5 ± 28.0 |"


def test_pass_at_k_over_samples():
    items = [_item(0, "math", "m", "math_answer", answer="7")]
    rows = score_items(items, [["The answer is 7.", "The answer is 8.", "The answer is 7.", "nope"]], (1, 2))
    assert rows[0]["score"] == 0.5
    assert rows[0]["pass_at_k"][1] == 0.5
    assert rows[0]["pass_at_k"][2] == pytest.approx(1 - 1 / 6)


def test_extra_metrics_and_unscored_items_are_reported_by_name():
    """An item's extra `metrics` are scored on the same completions; items no checker can score are counted
    as unscored in the benchmark table, not dropped."""


    lower = {"type": "change_case:english_lowercase", "kwargs": {}}
    items = [{"id": f"i{k}", "category": "chat", "benchmark": "ifbench", "verifier": "instruction_strict",
              "metrics": ["instruction_loose"], "messages": [], "constraints": cons}
             for k, cons in enumerate([[lower], [lower], [{"type": "no:such_check", "kwargs": {}}]])]
    completions = [["Sure!\nall lowercase"], ["ALL CAPS"], ["anything"]]
    results = aggregate(score_items(items, completions))
    bench = results["benchmarks"]["ifbench"]
    assert (bench["metric"], bench["score"], bench["scored"], bench["n"]) == ("prompt-level strict", 0.0, 2, 3)
    assert bench["metrics"] == {"prompt-level loose": 50.0}
    row = "| ifbench | chat | prompt-level strict | 0.0 ± 0.0 | 2 / 3 | prompt-level loose 50.0 |"
    assert row in benchmark_table(results)


ADD_TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4"


def _code_item(i, **cols):
    return _item(i, "code", "humaneval", "code_pass", tests=ADD_TESTS, entry_point="add",
                 prompt_prefix='def add(a, b):\n    """The sum."""\n', **cols)


def test_pass_at_1_is_the_score_whatever_the_sample_counts_and_pass_at_k_needs_k_samples_everywhere():
    """One pass@1 definition: the mean over tasks of correct/n, which is the benchmark's score, also when tasks
    have different numbers of samples (tasks with one sample once dropped out of pass@1); pass@k is reported only
    where every scored task has k samples."""
    right, wrong = "    return a + b\n", "    return 3\n"
    items = [_code_item(0), _code_item(1), _code_item(2)]
    rows = score_items(items, [[right], [right, wrong], [wrong, wrong]], (1, 2))
    bench = aggregate(rows)["benchmarks"]["humaneval"]
    assert [r["score"] for r in rows] == [1.0, 0.5, 0.0]
    assert bench["score"] == bench["pass@1"] == pytest.approx(50.0)
    assert "pass@2" not in bench  # task 0 has one sample
    rows = score_items(items[1:], [[right, wrong], [wrong, wrong]], (1, 2))
    assert aggregate(rows)["benchmarks"]["humaneval"]["pass@2"] == pytest.approx(50.0)


def test_humaneval_scores_completions_as_the_official_harness_unless_extract_code():
    """The prompt + the completion as written (a fenced reply is not Python), a 3 s timeout; `--extract-code`
    takes the first fenced block and the table says so."""
    from barkit.eval.harness import with_code_extraction


    fenced = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\n"
    commented = "    return a + b\n    # ```python\n    # return 0\n    # ```\n"
    slow = "    import time\n    time.sleep(3.5)\n    return a + b\n"
    items = [_code_item(0), _code_item(1), _code_item(2)]
    official = score_items(items, [[fenced], [commented], [slow]])
    assert [r["score"] for r in official] == [0.0, 1.0, 0.0]
    extracted = score_items(with_code_extraction(items, True), [[fenced], [commented], [slow]])
    assert extracted[0]["score"] == 1.0
    table = benchmark_table({**aggregate(official), "extract_code": False})
    assert table.endswith("pass@k: the prompt + each completion as written, 3 s per program (HumanEval's official "
                          "harness); each program in a sandbox of 1024 MB (the official harness sets no memory cap)\n")
    assert "`--extract-code`; not the official harness" in benchmark_table({**aggregate(extracted),
                                                                           "extract_code": True})


def test_a_benchmark_s_own_categories_are_reported_beside_its_score():
    """BFCL reports per category: items carrying `subset` get a per-subset accuracy in results and the table."""
    spec = [{"name": "f", "parameters": {"type": "dict", "required": ["x"], "properties": {"x": {"type": "integer"}}}}]
    call = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    items = [{"id": f"{sub}_{i}", "category": "tool_use", "benchmark": "bfcl", "verifier": "tool_call",
              "messages": [{"role": "user", "content": "q"}], "tools": spec, "decoder": "bfcl", "subset": sub,
              "ground_truth": truth} for i, (sub, truth) in enumerate(
        [("simple", [{"f": {"x": [1]}}]), ("simple", [{"f": {"x": [2]}}]), ("irrelevance", [])])]
    rows = score_items(items, [[call]] * 3)
    bench = aggregate(rows)["benchmarks"]["bfcl"]
    assert bench["score"] == pytest.approx(100 / 3) and bench["subsets"] == {"simple": 50.0, "irrelevance": 0.0}
    assert "simple 50.0, irrelevance 0.0" in benchmark_table(aggregate(rows))
