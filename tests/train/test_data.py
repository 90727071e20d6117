"""Data loading: packing, assistant-only labels, mixing, stratified samples, the step order, RL prompts."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from barkit.errors import BarkitError
from barkit.tiny import tiny_tokenizer
from barkit.train import data
from barkit.train.rows import read_rows


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_pack_text_concatenates_documents_with_eos(tmp_path, tok):
    texts = ["the quick brown fox", "jumps over", "the lazy dog 1 + 2 = 3"]
    path = _write(tmp_path / "t.jsonl", [{"text": t} for t in texts])
    stream = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    examples = data.pack_text([path], tok, 4)
    assert [e.input_ids for e in examples] == [stream[i:i + 4] for i in range(0, len(stream) // 4 * 4, 4)]
    assert all(e.labels == e.input_ids for e in examples)
    assert examples.array.dtype == np.int32 and examples.array.nbytes == 4 * 4 * len(examples)  # 4 B a token
    with pytest.raises(BarkitError, match="fewer than one sequence"):
        data.pack_text([path], tok, 1000)


def test_chat_labels_cover_exactly_the_assistant_turns(tmp_path, tok):
    path = _write(tmp_path / "c.jsonl", [{"messages": [
        {"role": "user", "content": "1 + 2"}, {"role": "assistant", "content": "3"},
        {"role": "user", "content": "the dog"}, {"role": "assistant", "content": "jumps"}]}])
    (example,), truncated = data.tokenize_chats(path, tok, 128)
    assert truncated == 0
    targets = [t for t in example.labels if t != data.IGNORE]
    assert tok.decode(targets) == "3<|end|>jumps<|end|>"
    assert example.num_targets == len(targets)
    (short,), truncated = data.tokenize_chats(path, tok, 9)
    assert truncated == 1 and len(short.input_ids) == 9


def test_malformed_lines_are_listed(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join("{oops\n" for _ in range(12)))
    with pytest.raises(BarkitError, match=r"bad.jsonl: malformed JSON \(not an object\) on lines "
                                          r"1, 2, 3, 4, 5, 6, 7, 8, 9, 10 \(and 2 more\)"):
        read_rows(path)


def test_mix_and_stratified_sample():
    domain, general = [("d", i) for i in range(30)], [("g", i) for i in range(7)]
    mixed = list(data.mix(domain, general, 0.4, seed=0))
    assert len(mixed) == 50 and mixed[:30] == domain
    assert sorted(mixed[30:37]) == general  # whole passes over the general set, reshuffled each pass
    assert sorted(Counter(mixed[30:]).values()) == [2] + [3] * 6
    assert list(data.mix(domain, general, 0.4, seed=0)) == mixed  # deterministic
    sample = data.stratified_sample([list(range(100)), list(range(1000, 1010))], 0.1, 5, seed=3)
    assert len(sample) == 10 + 5
    assert len(set(sample[:10])) == 10 and all(s >= 1000 for s in sample[10:])


def test_step_order_is_a_pure_function_of_the_step():
    order = data.StepOrder(10, 4, seed=7)
    first_epoch = [i for s in range(5) for i in order.batch(s)][:10]
    assert sorted(first_epoch) == list(range(10))
    again = data.StepOrder(10, 4, seed=7)
    assert [again.batch(s) for s in (4, 0, 2)] == [order.batch(s) for s in (4, 0, 2)]
    assert data.StepOrder(10, 4, seed=8).batch(0) != order.batch(0)
    assert order.steps_for(2.0) == 5


def test_collate_pads_right_and_skips_the_mask_when_unpadded():
    a, b = data.Example([5, 6, 7], [5, 6, 7]), data.Example([8], [data.IGNORE])
    batch = data.collate([a, b], pad_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["labels"].tolist() == [[5, 6, 7], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long
    assert data.collate([a, a], pad_id=1)["attention_mask"] is None


def test_rl_prompts(tmp_path, tok):
    path = _write(tmp_path / "r.jsonl", [
        {"prompt": [{"role": "user", "content": "1 + 2"}], "verifier": "math_answer", "answer": "3", "id": "x"}])
    (prompt,) = data.load_rl_prompts(path, tok, 64, {"math_answer": ("answer",)})
    assert prompt.verifier == "math_answer" and prompt.columns == {"answer": "3", "id": "x"}
    assert tok.decode(prompt.prompt_ids).endswith("<|assistant|>")
    with pytest.raises(BarkitError, match="r.jsonl:1: prompt is 6 tokens, more than"):
        data.load_rl_prompts(path, tok, 5, {"math_answer": ("answer",)})
    bad = _write(tmp_path / "b.jsonl", [{"prompt": [{"role": "user", "content": "q"},
                                                    {"role": "assistant", "content": "a"}], "verifier": "v"}])
    with pytest.raises(BarkitError, match="b.jsonl:1: 'prompt' must not end with an assistant turn"):
        data.load_rl_prompts(bad, tok, 64, {"v": ()})


def test_collate_packed_restarts_positions_and_drops_each_first_label():
    a, b, c = (data.Example(list(range(10, 10 + n)), list(range(10, 10 + n))) for n in (3, 4, 6))
    batch = data.collate_packed([a, b, c], pad_id=1, width=8)
    assert batch["attention_mask"] is None
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13, 14, 15, 1], [10, 11, 12, 13, 10, 11, 12]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0], [0, 1, 2, 3, 0, 1, 2]]
    ignore = data.IGNORE
    assert batch["labels"].tolist() == [[ignore, 11, 12, 13, 14, 15, ignore], [ignore, 11, 12, 13, ignore, 11, 12]]


def test_route_targets_follow_each_example_in_padded_and_packed_batches():
    from barkit.train.data import IGNORE, Example, collate, collate_packed, with_route

    general, domain = with_route([Example([5, 6], [5, 6])], 0), with_route([Example([7, 8, 9], [7, 8, 9])], 1)
    assert collate(general + domain, pad_id=0)["route_targets"].tolist() == [[0, 0, IGNORE], [1, 1, 1]]
    packed = collate_packed(domain + general + [Example([4], [4])], pad_id=0, width=8)
    assert packed["route_targets"].tolist() == [[1, 1, 1, 0, 0, IGNORE]]  # the unrouted example gets no target
    assert collate([Example([1, 2], [1, 2])], pad_id=0)["route_targets"] is None
