"""The data formats people have: TRL prompt/completion chats and open-instruct RLVR rows train and score."""

import json

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
            {"messages": [{"role": "user", "content": "x"}], "ground_truth": "y", "dataset": "string_f1"}]
    with pytest.raises(BarkitError, match=r"rl.jsonl:2: open-instruct dataset 'string_f1' has no barkit verifier"):
        data.load_rl_prompts(_write(tmp_path / "rl.jsonl", rows), tiny_tokenizer(), 64, VERIFIER_COLUMNS)
