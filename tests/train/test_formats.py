"""The data formats people have: TRL prompt/completion chats and open-instruct RLVR rows train and score."""

import json
import re
from pathlib import Path

import pytest

from barkit.errors import BarkitError
from barkit.eval.verifiers import VERIFIER_COLUMNS
from barkit.tiny import tiny_tokenizer
from barkit.train import data
from barkit.train.objectives.grpo import score


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_completion_rows_mask_like_messages(tmp_path):
    tok = tiny_tokenizer()
    messages = _write(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "1 + 2"},
                                                           {"role": "assistant", "content": "3"}]}])
    strings = _write(tmp_path / "s.jsonl", [{"prompt": "1 + 2", "completion": "3"}])
    lists = _write(tmp_path / "l.jsonl", [{"prompt": [{"role": "user", "content": "1 + 2"}],
                                           "completion": [{"role": "assistant", "content": "3"}]}])
    reference = data.tokenize_chats(messages, tok, 64)[0]
    assert data.tokenize_chats(strings, tok, 64)[0] == reference == data.tokenize_chats(lists, tok, 64)[0]


def test_open_instruct_rlvr_rows_map_onto_barkit_verifiers(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "What is 6 x 7?"}], "ground_truth": "42", "dataset": "gsm8k"},
            {"messages": [{"role": "user", "content": "Half of 9?"}], "ground_truth": ["4.5"], "dataset": "MATH"}]
    prompts = data.load_rl_prompts(_write(tmp_path / "rl.jsonl", rows), tiny_tokenizer(), 64, VERIFIER_COLUMNS)
    assert [(p.verifier, p.columns["answer"]) for p in prompts] == [("math_answer", "42"), ("math_answer", "4.5")]
    rewards = score(["6 x 7 = 42", "The answer is 4.5"], prompts)
    assert rewards.tolist() == [1.0, 1.0]
    assert score(["41", "4"], prompts).tolist() == [0.0, 0.0]


def test_an_unmapped_open_instruct_dataset_names_the_row(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "x"}], "ground_truth": "y", "dataset": "gsm8k"},
            {"messages": [{"role": "user", "content": "x"}], "ground_truth": "y", "dataset": "code_stdio"}]
    with pytest.raises(BarkitError, match=r"rl.jsonl:2: open-instruct verifier 'code_stdio' has no barkit verifier "
                                          r"\(stdin/stdout tests"):
        data.load_rl_prompts(_write(tmp_path / "rl.jsonl", rows), tiny_tokenizer(), 64, VERIFIER_COLUMNS)


CHATS = [{"messages": [{"role": "user", "content": "1 + 2"}, {"role": "assistant", "content": "3"}]},
         {"messages": [{"role": "user", "content": "the fox"}, {"role": "assistant", "content": "jumps"},
                       {"role": "user", "content": "2 + 2"}, {"role": "assistant", "content": "4"}]}]


def _every_format(tmp_path, rows: list[dict]) -> dict:
    """The same rows as JSONL, a JSON array, parquet, a directory of parquet files, and datasets directories."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    (tmp_path / "shards").mkdir()
    pq.write_table(table.slice(0, 1), tmp_path / "shards" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(1), tmp_path / "shards" / "train-00001-of-00002.parquet")
    pq.write_table(table, tmp_path / "rows.parquet")
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "dsdict"))
    return {"jsonl": _write(tmp_path / "rows.jsonl", rows), "json": tmp_path / "rows.json",
            "parquet": tmp_path / "rows.parquet", "parquet dir": tmp_path / "shards",
            "datasets dir": tmp_path / "ds", "datasets dict (train split)": tmp_path / "dsdict"}


def test_every_file_format_gives_the_same_examples(tmp_path):
    tok = tiny_tokenizer()
    files = _every_format(tmp_path, CHATS)
    reference = data.tokenize_chats(files["jsonl"], tok, 64)[0]
    assert len(reference) == 2 and all(e.num_targets for e in reference)
    for name, path in files.items():
        assert data.tokenize_chats(path, tok, 64)[0] == reference, name
    (tmp_path / "text").mkdir()
    texts = _every_format(tmp_path / "text", [{"text": "the quick fox"}, {"text": "jumps over the dog"}] * 8)
    packed = list(data.pack_text([texts["jsonl"]], tok, 8))
    assert list(data.pack_text([texts["parquet"]], tok, 8)) == packed
    assert list(data.pack_text([texts["datasets dir"]], tok, 8)) == packed


def test_sharegpt_and_mapped_columns_read_as_messages(tmp_path):
    tok = tiny_tokenizer()
    reference = data.tokenize_chats(_write(tmp_path / "m.jsonl", CHATS[:1]), tok, 64)[0]
    sharegpt = [{"conversations": [{"from": "human", "value": "1 + 2"}, {"from": "gpt", "value": "3"}]}]
    assert data.tokenize_chats(_write(tmp_path / "s.jsonl", sharegpt), tok, 64)[0] == reference
    renamed = [{"dialog": CHATS[0]["messages"]}]
    path = _write(tmp_path / "r.jsonl", renamed)
    assert data.tokenize_chats(path, tok, 64, {"dialog": "messages"})[0] == reference
    with pytest.raises(BarkitError, match=r"r.jsonl:1: missing column 'dialogue' \(named in the column mapping\)"):
        data.tokenize_chats(path, tok, 64, {"dialogue": "messages"})


@pytest.mark.parametrize("name, content, error", [
    ("rows.csv", "a,b\n", "rows.csv: unknown data format '.csv'"),
    ("rows.parquet", "not parquet", "rows.parquet: not a readable parquet file"),
    ("rows.json", '{"messages": 1}', "rows.json: expected a JSON array of rows"),
    ("rows.json", "[1, 2", "rows.json: malformed JSON"),
])
def test_unreadable_files_are_one_line_naming_the_file(tmp_path, name, content, error):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(BarkitError, match=error.replace(".", r"\.").replace("(", r"\(")):
        data.tokenize_chats(path, tiny_tokenizer(), 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BarkitError, match="empty: a directory with no data barkit reads"):
        data.tokenize_chats(empty, tiny_tokenizer(), 64)


def test_open_instruct_ifeval_and_code_rows_map_and_score(tmp_path):
    ifeval = {"messages": [{"role": "user", "content": "Answer in lowercase, no commas."}], "dataset": "ifeval",
              "ground_truth": str([{"instruction_id": ["change_case:english_lowercase", "punctuation:no_comma"],
                                    "kwargs": [None, {}]}])}
    code = {"messages": [{"role": "user", "content": "Write add(a, b)."}], "dataset": ["code"],
            "ground_truth": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}
    prompts = data.load_rl_prompts(_write(tmp_path / "rl.jsonl", [ifeval, code]), tiny_tokenizer(), 64,
                                   VERIFIER_COLUMNS)
    assert [p.verifier for p in prompts] == ["instruction", "code_tests_reward"]
    assert prompts[0].columns["constraints"] == [{"type": "change_case:english_lowercase", "kwargs": {}},
                                                 {"type": "punctuation:no_comma", "kwargs": {}}]
    assert prompts[1].columns["entry_point"] == "add"
    # open-instruct's ifeval reward: the share of constraints followed
    assert score(["all lowercase here", "Not Lowercase, Comma", "lowercase, comma"],
                 [prompts[0]] * 3).tolist() == [1.0, 0.0, 0.5]


def test_open_instruct_code_rows_score_through_the_sandboxed_verdict(tmp_path):
    code = {"messages": [{"role": "user", "content": "Write add(a, b)."}], "dataset": "code",
            "ground_truth": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}
    (prompt,) = data.load_rl_prompts(_write(tmp_path / "rl.jsonl", [code]), tiny_tokenizer(), 64, VERIFIER_COLUMNS)
    right, wrong = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"
    assert score([right, wrong], [prompt, prompt]).tolist() == [1.0, 0.0]


# one right and one wrong completion per row of the fixture (one row per open-instruct verifier and format)
OPEN_INSTRUCT_FIXTURE = Path(__file__).parent / "data" / "open_instruct_rlvr.jsonl"
RIGHT_WRONG = [
    ("math_answer", "April 48, May 24, so 48 + 24 = 72.", "April 48, May 24, so 48 + 24 = 70."),
    ("math_answer", "$\\boxed{0.5}$", "$\\boxed{2}$"),
    ("math_answer", "\\boxed{[0, 2)}", "\\boxed{[0, 2]}"),
    ("math_final_answer", "Final Answer: The final answer is $\\sqrt{8}=2\\sqrt2$. I hope it is correct.",
     "\\boxed{2\\sqrt{2}}"),
    ("instruction", "quiet water runs\nunder the old stone bridge\nthe river hums", "Quiet water, running."),
    ("if_function", "<think>Plan It.</think>the river runs slow.", "The River runs slow."),
    ("if_function", "The river cut the bank.", "The stream cut the shore."),
    ("code_tests_reward", "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"),
    ("string_match", "<answer>paris</answer>", "Paris"),
    ("string_f1", "William Shakespeare", "Christopher Marlowe"),
    ("flan_answer", "It is clear. The answer is: yes", "The answer is: no"),
]


def test_open_instruct_fixture_rows_of_every_format_load_and_score():
    prompts = data.load_rl_prompts(OPEN_INSTRUCT_FIXTURE, tiny_tokenizer(), 256, VERIFIER_COLUMNS)
    assert [p.verifier for p in prompts] == [v for v, *_ in RIGHT_WRONG]
    right = score([r for _, r, _ in RIGHT_WRONG], prompts)
    wrong = score([w for *_, w in RIGHT_WRONG], prompts)
    assert right.tolist() == [1.0] * len(prompts) and wrong.tolist() == [0.0] * len(prompts)


@pytest.mark.parametrize("truth,message", [
    ({"func_name": "no_such_check"}, "ifeval ground_truth names func_name 'no_such_check', which barkit does not know"),
    ({"instruction": 1}, "ifeval ground_truth needs 'instruction_id' (a list) and 'kwargs', or 'func_name'"),
])
def test_bad_ifeval_rows_name_the_row(tmp_path, truth, message):
    row = {"messages": [{"role": "user", "content": "x"}], "ground_truth": json.dumps(truth), "dataset": "ifeval"}
    with pytest.raises(BarkitError, match=r"rl.jsonl:1: " + re.escape(message)):
        data.load_rl_prompts(_write(tmp_path / "rl.jsonl", [row]), tiny_tokenizer(), 64, VERIFIER_COLUMNS)


@pytest.mark.parametrize("dataset,why", [("general-quality", "an LLM judge"), ("max_length", "a length reward"),
                                         (["math", "ifeval"], "several verifiers")])
def test_open_instruct_verifiers_barkit_cannot_run_are_refused_with_the_reason(tmp_path, dataset, why):
    row = {"messages": [{"role": "user", "content": "x"}], "ground_truth": "1", "dataset": dataset}
    with pytest.raises(BarkitError, match=r"rl.jsonl:1: .*" + why):
        data.load_rl_prompts(_write(tmp_path / "rl.jsonl", [row]), tiny_tokenizer(), 64, VERIFIER_COLUMNS)
