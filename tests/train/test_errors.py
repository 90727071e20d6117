"""Bad input: a one-line error naming the file/key and the problem, and nothing written."""

import json
import shutil

import pytest

from barkit.cli import main


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _adapt(capsys, tmp_path, stage, model, data, *extra):
    code = main(["adapt", "--stage", stage, "--model", str(model), "--data", str(data), "--out",
                 str(tmp_path / "out"), "--steps", "2", "--batch-size", "4", "--sequences.seq-len", "32",
                 "--distributed.threads", "1",
                 "--progress", "false", *extra])
    return code, capsys.readouterr().err.strip()


def _assert_failed_cleanly(tmp_path, code, err, needle):
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))) == []


GOOD_CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})


@pytest.mark.parametrize("stage,lines,needle", [
    ("midtrain", ['{"text": "fine"}', "{broken", '{"text": "ok"}', "[1, 2]"],
     "data.jsonl: malformed JSON (not an object) on lines 2, 4"),
    ("midtrain", ['{"text": "fine"}', '{"body": "no text column"}'], "data.jsonl:2: missing column 'text'"),
    ("midtrain", [""], "data.jsonl: data file is empty"),
    ("sft", [GOOD_CHAT, json.dumps({"messages": [{"role": "user", "content": "only a question"}]})],
     "data.jsonl:2: chat has no assistant turn"),
    ("sft", [json.dumps({"messages": [{"role": "robot", "content": "x"}]})], "data.jsonl:1: each message needs a role"),
    ("rl", [json.dumps({"prompt": [{"role": "user", "content": "2+2"}], "verifier": "math_answer"})],
     "data.jsonl:1: verifier 'math_answer' needs column 'answer'"),
    ("rl", [json.dumps({"prompt": [{"role": "user", "content": "2+2"}], "verifier": "vibes", "answer": "4"})],
     "data.jsonl:1: unknown verifier 'vibes'"),
    ("rl", [json.dumps({"prompt": [{"role": "user", "content": "f"}], "verifier": "code_tests_reward",
                        "tests": {"a": 1}, "entry_point": "f"})], "data.jsonl:1: column 'tests' must be a string"),
])
def test_bad_data(tmp_path, capsys, moe_ckpts, stage, lines, needle):
    data = _write(tmp_path / "data.jsonl", lines)
    code, err = _adapt(capsys, tmp_path, stage, moe_ckpts["olmo2"], data, "--set", "rl.max_new_tokens=8")
    _assert_failed_cleanly(tmp_path, code, err, needle)


def test_missing_data_file(tmp_path, capsys, moe_ckpts):
    code, err = _adapt(capsys, tmp_path, "sft", moe_ckpts["olmo2"], tmp_path / "nope.jsonl")
    _assert_failed_cleanly(tmp_path, code, err, "nope.jsonl: data file not found")


@pytest.mark.parametrize("extra,needle", [
    (["--trainable", "model.layers.*.mlp.experts.nope"], "'model.layers.*.mlp.experts.nope' matches no parameter"),
    (["--trainable", "expert:0"], "'expert:0' touches the anchor (expert:0"),
    (["--trainable", "all"], "'all' touches the anchor"),
    (["--trainable", "expert:5"], "'expert:5' but the model has 2 experts"),
    (["--trainable", "lm_head.weight[400]"], "selects row 400 of 'lm_head.weight', which has 300 rows"),
    (["--batch-size", "0"], "config key 'batch_size': must be >= 1"),
    (["--set", "rl.num_generations=1"], "config key 'rl.num_generations'"),
    (["--set", "bogus=1"], "unknown config key 'bogus'"),
    (["--mixture.general-ratio", "0.5"], "config key 'mixture.general_data': required when general_ratio > 0"),
])
def test_bad_config(tmp_path, capsys, moe_ckpts, data_files, extra, needle):
    code, err = _adapt(capsys, tmp_path, "sft", moe_ckpts["olmo2"], data_files["chat"], *extra)
    _assert_failed_cleanly(tmp_path, code, err, needle)


def test_not_a_two_expert_checkpoint(tmp_path, capsys, dense_ckpts, moe_ckpts, data_files):
    anchor, _ = dense_ckpts["olmo2"]
    code, err = _adapt(capsys, tmp_path, "midtrain", anchor, data_files["text"])
    _assert_failed_cleanly(tmp_path, code, err, "not a barkit 2-expert checkpoint (a dense 'olmo2' model)")
    code, err = _adapt(capsys, tmp_path, "router", anchor, data_files["chat"])
    _assert_failed_cleanly(tmp_path, code, err, "router training needs a mixture-of-experts checkpoint")
    gpt = tmp_path / "gpt"
    shutil.copytree(moe_ckpts["olmo2"], gpt)
    config = json.loads((gpt / "config.json").read_text())
    (gpt / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    code, err = _adapt(capsys, tmp_path, "sft", gpt, data_files["chat"])
    _assert_failed_cleanly(tmp_path, code, err, "unsupported model_type 'gpt2'")
    code, err = _adapt(capsys, tmp_path, "sft", tmp_path / "missing", data_files["chat"])
    _assert_failed_cleanly(tmp_path, code, err, "missing: no such checkpoint directory")


def test_chat_template_that_rewrites_history_is_one_error_naming_the_row(tmp_path, capsys, moe_ckpts):
    """Without generation markers assistant turns are found by rendering prefixes; a template that renders an
    earlier turn differently once later turns follow cannot be masked that way: one line naming the row."""
    plain = tmp_path / "plain"
    shutil.copytree(moe_ckpts["olmo2"], plain)
    rewriting = ("{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|>"
                 "{% if loop.last %}{{ m['content'] }}{% else %}...{% endif %}<|end|>"
                 "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        path = plain / name
        if path.is_file() and name.endswith(".jinja"):
            path.write_text(rewriting)
        elif path.is_file():
            cfg = json.loads(path.read_text())
            if "chat_template" in cfg:
                cfg["chat_template"] = rewriting
                path.write_text(json.dumps(cfg))
    data = tmp_path / "chats.jsonl"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "again"}, {"role": "assistant", "content": "bye"}]
    data.write_text(json.dumps({"messages": turns[:2]}) + "\n" + json.dumps({"messages": turns}) + "\n")
    code, err = _adapt(capsys, tmp_path, "sft", plain, str(data))
    _assert_failed_cleanly(tmp_path, code, err, "chats.jsonl:2: the chat template drops assistant turn 2")
