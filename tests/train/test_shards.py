"""Token shards: tokenised once, streamed by training with the same examples (so the same weights) as JSONL."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from barkit.checkpoint import CheckpointReader
from barkit.cli import main
from barkit.errors import BarkitError
from barkit.train import data
from barkit.train.shards import TokenShards, tokenize_to_shards


def _same_weights(a, b) -> bool:
    ra, rb = CheckpointReader(a), CheckpointReader(b)
    return ra.keys() == rb.keys() and all(torch.equal(ra.get(k), rb.get(k)) for k in ra.keys())


@pytest.fixture(scope="module")
def tokenizer(moe_ckpts):
    return AutoTokenizer.from_pretrained(str(moe_ckpts["olmo2"]))


def test_text_shards_hold_the_packed_sequences(tmp_path, tokenizer, data_files):
    shards = TokenShards(tokenize_to_shards([data_files["text"]], tokenizer, "text", 32, tmp_path / "s"))
    packed = data.pack_text([data_files["text"]], tokenizer, 32)
    assert len(shards) == len(packed) and shards.meta["tokens"] == 32 * len(packed)
    assert all(shards[i] == packed[i] for i in range(len(packed)))
    assert isinstance(shards.tokens, np.memmap)


def test_chat_shards_hold_the_masked_chats(tmp_path, tokenizer, data_files):
    shards = TokenShards(tokenize_to_shards([data_files["chat"]], tokenizer, "chat", 32, tmp_path / "s"))
    chats, _ = data.tokenize_chats(data_files["chat"], tokenizer, 32)
    assert [shards[i] for i in range(len(shards))] == chats


def test_shards_from_a_datasets_directory_with_mapped_columns_equal_those_from_jsonl(tmp_path, tokenizer,
                                                                                     data_files):
    import datasets

    rows = [{"dialog": json.loads(line)["messages"]} for line in open(data_files["chat"]) if line.strip()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    ours = TokenShards(tokenize_to_shards([tmp_path / "ds"], tokenizer, "chat", 32, tmp_path / "a",
                                          columns={"dialog": "messages"}))
    theirs = TokenShards(tokenize_to_shards([data_files["chat"]], tokenizer, "chat", 32, tmp_path / "b"))
    assert len(ours) == len(theirs) and all(ours[i] == theirs[i] for i in range(len(ours)))


@pytest.mark.parametrize("stage,kind,source", [("midtrain", "text", "text"), ("sft", "chat", "chat")])
def test_training_on_shards_equals_training_on_jsonl(tmp_path, moe_ckpts, data_files, run_stage, stage, kind,
                                                     source):
    model = moe_ckpts["olmo2"]
    assert main(["data", "tokenize", "--model", str(model), "--data", data_files[source], "--kind", kind,
                 "--seq-len", "32", "--out", str(tmp_path / "shards")]) == 0
    streamed = run_stage(tmp_path / "streamed", stage, model, str(tmp_path / "shards"), steps=3)
    loaded = run_stage(tmp_path / "loaded", stage, model, data_files[source], steps=3)
    assert _same_weights(streamed, loaded)
    manifest = json.loads((streamed / "barkit_manifest.json").read_text())
    assert list(manifest["data"]) == [str((tmp_path / "shards").resolve())]


@pytest.mark.parametrize("stage,settings", [
    ("sft", {"mixture": {"general_ratio": 0.5}, "route_supervision": 0.1}),  # the mixture, routed, as views
    ("router", {"mixture": {"sample_fraction": 0.25, "min_rows_per_file": 2}}),  # per-directory samples
])
def test_the_sft_mixture_and_the_router_sample_stream_from_shards(tmp_path, moe_ckpts, data_files, run_stage,
                                                                   stage, settings):
    """Every stage that reads data takes token shards: SFT's general mixture, route supervision and the
    router's stratified sample give the weights the same JSONL rows give."""
    model = moe_ckpts["olmo2"]
    for name in ("chat", "general"):
        assert main(["data", "tokenize", "--model", str(model), "--data", data_files[name], "--kind", "chat",
                     "--seq-len", "32", "--out", str(tmp_path / name)]) == 0
    general = {"general_data": [str(tmp_path / "general")]} if stage == "sft" else {}
    data_paths = [str(tmp_path / "chat")] + ([str(tmp_path / "general")] if stage == "router" else [])
    streamed = run_stage(tmp_path / "streamed", stage, model, data_paths, steps=2,
                         **{**settings, "mixture": {**settings["mixture"], **general}})
    jsonl = {"general_data": [data_files["general"]]} if stage == "sft" else {}
    rows = [data_files["chat"]] + ([data_files["general"]] if stage == "router" else [])
    loaded = run_stage(tmp_path / "loaded", stage, model, rows, steps=2,
                       **{**settings, "mixture": {**settings["mixture"], **jsonl}})
    assert _same_weights(streamed, loaded)
    with pytest.raises(BarkitError, match="'mixture.general_data': token shards and JSONL files cannot be mixed"):
        run_stage(tmp_path / "o", "sft", model, str(tmp_path / "chat"),
                  mixture={"general_data": [str(tmp_path / "general"), data_files["general"]]})


@pytest.mark.parametrize("fmt", ["parquet", "datasets"])
def test_training_on_parquet_or_a_datasets_directory_equals_training_on_jsonl(tmp_path, moe_ckpts, data_files,
                                                                             run_stage, fmt):
    import datasets

    rows = [json.loads(line) for line in open(data_files["chat"]) if line.strip()]
    source = tmp_path / ("chats.parquet" if fmt == "parquet" else "chats")
    ds = datasets.Dataset.from_list(rows)
    if fmt == "parquet":
        ds.to_parquet(str(source))
    else:
        ds.save_to_disk(str(source))
    theirs = run_stage(tmp_path / "jsonl", "sft", moe_ckpts["olmo2"], data_files["chat"], steps=2)
    ours = run_stage(tmp_path / "ours", "sft", moe_ckpts["olmo2"], str(source), steps=2)
    assert _same_weights(ours, theirs)
    manifest = json.loads((ours / "barkit_manifest.json").read_text())
    assert list(manifest["data"]) == [str(source.resolve())]


def test_shards_are_refused_for_another_seq_len_kind_or_tokenizer(tmp_path, moe_ckpts, data_files, tokenizer,
                                                                   run_stage):
    text = tokenize_to_shards([data_files["text"]], tokenizer, "text", 32, tmp_path / "text")
    with pytest.raises(BarkitError, match="tokenised for seq_len=32, the stage uses sequences.seq_len=16"):
        run_stage(tmp_path / "o", "midtrain", moe_ckpts["olmo2"], str(text), sequences={"seq_len": 16})
    with pytest.raises(BarkitError, match="text shards, but this stage trains on chat"):
        run_stage(tmp_path / "o", "sft", moe_ckpts["olmo2"], str(text))
    other = AutoTokenizer.from_pretrained(str(moe_ckpts["llama"]))
    other.add_tokens(["<extra>"])
    foreign = tokenize_to_shards([data_files["text"]], other, "text", 32, tmp_path / "foreign")
    with pytest.raises(BarkitError, match="tokenised with another tokenizer than the model's"):
        run_stage(tmp_path / "o", "midtrain", moe_ckpts["olmo2"], str(foreign))
    assert not (tmp_path / "o").exists()


def test_a_bad_line_is_one_error_naming_it_and_nothing_is_written(tmp_path, moe_ckpts, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n[1, 2]\n')
    code = main(["data", "tokenize", "--model", str(moe_ckpts["olmo2"]), "--data", str(bad), "--kind", "text",
                 "--seq-len", "4", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.endswith(f"{bad}:2: malformed JSON (not an object)") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
