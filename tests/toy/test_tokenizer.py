"""The toy tokenizer: determinism, exact round trips, digit splitting and the chat template's masks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from barkit.errors import BarkitError
from barkit.toy.world import PROFILES, generate_world, train_tokenizer
from barkit.toy.world.entities import build_world
from barkit.toy.world.tokenizer import SPECIAL_TOKENS, generation_eos_ids, render_tools
from barkit.toy.world.tools import TOOLS

VOCAB = PROFILES["quick"].vocab_size


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tok")
    generate_world(root / "data", "quick", 0)
    start = time.perf_counter()
    tok = train_tokenizer(root / "data", root / "tok_a", VOCAB)
    seconds = time.perf_counter() - start
    train_tokenizer(root / "data", root / "tok_b", VOCAB)
    return {"root": root, "tok": tok, "seconds": seconds}


def strings(path: Path) -> list[str]:
    """Every string a row contributes: text, message contents, rendered tools."""
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out += [row["text"]] if "text" in row else []
        out += [m["content"] for m in row.get("messages") or row.get("prompt") or []]
        out += [render_tools(row["tools"])] if row.get("tools") else []
    return out


def test_training_is_fast_and_deterministic(built: dict) -> None:
    assert built["seconds"] < 10.0
    root = built["root"]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (root / "tok_a" / name).read_bytes() == (root / "tok_b" / name).read_bytes()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "temp dirs left behind"


def test_special_tokens_have_fixed_ids(built: dict) -> None:
    tok = built["tok"]
    assert len(tok) == VOCAB
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(8))
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 0, "<|pad|>", 1)
    assert generation_eos_ids(tok) == [5, 0]
    assert tok.encode("<tool_call>{}</tool_call><|end|>") == [6, *tok.encode("{}"), 7, 5]


def test_digits_are_single_tokens(built: dict) -> None:
    tok = built["tok"]
    assert tok.convert_ids_to_tokens(tok.encode("1234 + 56")) == ["1", "2", "3", "4", "Ġ+", "Ġ", "5", "6"]


def test_entity_names_are_single_tokens(built: dict) -> None:
    tok = built["tok"]
    world = build_world(PROFILES["quick"], 0)
    for name in [p.name for p in world.people] + [c.name for c in world.cities] + [o.name for o in world.orgs]:
        assert len(tok.encode(name)) == 1 and len(tok.encode(" " + name)) == 1, name


def test_every_training_and_eval_string_round_trips(built: dict) -> None:
    tok = built["tok"]
    texts = [s for p in sorted((built["root"] / "data").rglob("*.jsonl")) for s in strings(p)]
    assert len(texts) > 10000
    ids = tok(texts)["input_ids"]
    assert tok.batch_decode(ids) == texts
    odd = ["  two  spaces\n\n\ttab", "ünïcödé ✓ 日本", "x = -0.5e3", "<|user|> literal"]
    assert tok.batch_decode(tok(odd)["input_ids"]) == odd


def test_saved_tokenizer_loads_with_template(built: dict) -> None:
    out = built["root"] / "tok_a"
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert "{% generation %}" in config["chat_template"]
    loaded = AutoTokenizer.from_pretrained(out)
    sample = "Kela lives in Miro. 12 + 7 = 19."
    assert loaded.encode(sample) == built["tok"].encode(sample)
    assert loaded.chat_template == built["tok"].chat_template


CHATS = [
    ([{"role": "user", "content": "Where does Kela live?"}, {"role": "assistant", "content": "Miro"}], None),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello there."}, {"role": "user", "content": "2 + 3?"},
      {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."}], None),
    ([{"role": "user", "content": "What time is it in Miro and in Tolo?"},
      {"role": "assistant", "content": '<tool_call>{"name": "get_time", "arguments": {"city": "Miro"}}</tool_call>\n'
                                       '<tool_call>{"name": "get_time", "arguments": {"city": "Tolo"}}</tool_call>'}],
     [TOOLS["get_time"], TOOLS["set_alarm"]]),
]


@pytest.mark.parametrize("messages,tools", CHATS)
def test_assistant_mask_covers_exactly_assistant_turns(built: dict, messages: list, tools: list | None) -> None:
    tok = built["tok"]
    out = tok.apply_chat_template(messages, tools=tools, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [i for i, m in zip(ids, mask) if m]
    expected = "".join(m["content"] + "<|end|>" for m in messages if m["role"] == "assistant")
    assert tok.decode(masked) == expected
    inside, expected_mask = False, []
    for token in ids:  # masked: every token after <|assistant|> (id 4) up to and including its <|end|> (id 5)
        expected_mask.append(int(inside))
        inside = token == 4 or (inside and token != 5)
    assert mask == expected_mask


def test_template_renders_the_documented_format(built: dict) -> None:
    tok = built["tok"]
    messages, tools = CHATS[2]
    text = tok.apply_chat_template(messages[:1], tools=tools, add_generation_prompt=True, tokenize=False)
    assert text == (
        '<|system|>Tools:\n{"name": "get_time", "arguments": ["city"]}\n{"name": "set_alarm", "arguments": '
        '["hour", "minute"]}<|end|><|user|>What time is it in Miro and in Tolo?<|end|><|assistant|>'
    )
    assert render_tools(tools) in text
    plain = tok.apply_chat_template(CHATS[0][0], tokenize=False)
    assert plain == "<|user|>Where does Kela live?<|end|><|assistant|>Miro<|end|>"
    with_system = tok.apply_chat_template(CHATS[1][0][:3], tokenize=False)
    assert with_system == "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello there.<|end|>"


def test_bad_inputs_raise(tmp_path: Path, built: dict) -> None:
    with pytest.raises(BarkitError, match="vocab_size"):
        train_tokenizer(built["root"] / "data", tmp_path / "t", 100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BarkitError, match="no training"):
        train_tokenizer(tmp_path / "empty", tmp_path / "t", VOCAB)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jsonl").write_text("{not json\n")
    with pytest.raises(BarkitError, match="x.jsonl:1"):
        train_tokenizer(tmp_path / "bad", tmp_path / "t", VOCAB)
