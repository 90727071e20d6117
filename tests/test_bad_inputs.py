"""Every bad input is one error line naming the file and the problem, exit status 1, nothing written."""

import errno
import json
import shutil
import struct

import pytest

from barkit import checkpoint
from barkit.cli import main
from barkit.tiny import make_dense_checkpoint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    anchor = make_dense_checkpoint(root / "anchor", seed=0)
    made = {"anchor": anchor, "file": root / "file", "bad_utf8": root / "bad.jsonl"}
    made["file"].write_text("not a directory")
    made["bad_utf8"].write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    for name, edit in {
        "list_config": lambda d: (d / "config.json").write_text("[1, 2]"),
        "no_config": lambda d: (d / "config.json").unlink(),
        "truncated": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
        "list_header": lambda d: _header(d, lambda h: [1, 2]),
        "pickled": lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"),
        "no_offsets": lambda d: _header(d, lambda h: {k: ({kk: vv for kk, vv in v.items() if kk != "data_offsets"}
                                                          if k != "__metadata__" else v) for k, v in h.items()}),
    }.items():
        made[name] = shutil.copytree(anchor, root / name)
        edit(made[name])
    return made


def _header(ckpt, change) -> None:
    path = ckpt / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    raw = json.dumps(change(json.loads(data[8:8 + n]))).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


CASES = [
    (["branch", "{list_config}", "--out", "{out}"], "config.json: expected a JSON object of config keys, got list"),
    (["inspect", "{list_config}"], "config.json: expected a JSON object of config keys, got list"),
    (["branch", "{list_header}", "--out", "{out}"], "the header is not a JSON object"),
    (["branch", "{no_offsets}", "--out", "{out}"], "the header entry needs dtype, shape and data_offsets"),
    (["branch", "{anchor}", "--out", "{file}/out"], "file: cannot create the output's parent"),
    (["branch", "{anchor}", "--out", "{out}", "--max-shard-size", "lots"], "'lots' is not a size like 200MB"),
    (["adapt", "--stage", "pretrain", "--model", "{anchor}", "--data", "{bad_utf8}", "--out", "{out}"],
     "bad.jsonl:1: not valid UTF-8 text"),
    (["score", "--suite", "humaneval", "--completions", "{file}.missing"], "file.missing: No such file"),
    (["eval", "{truncated}", "--suite", "humaneval", "--out", "{out}"], "truncated or corrupt safetensors file"),
    (["eval", "{no_config}", "--suite", "humaneval", "--out", "{out}"], "config.json: missing"),
    (["generate", "{file}.missing", "--prompt", "hi"], "file.missing: no such checkpoint directory"),
    (["eval", "{pickled}", "--suite", "humaneval", "--out", "{out}"], "only pickle weights found"),  # never unpickled
    (["generate", "{pickled}", "--prompt", "hi"], "only pickle weights found"),
    (["generate", "{truncated}", "--prompt", "hi"], "truncated or corrupt safetensors file"),
    (["demo", "--out", "{file}", "--profile", "smoke"], "file"),
    (["demo", "--out", "{out}", "--workers", "-1"], "config key 'workers': must be >= 1"),
    (["merge", "--method", "linear", "--general", "{anchor}", "--models", "math={anchor}:abc", "--out", "{out}"],
     "weight 'abc' is not a number"),
    (["branch", "{anchor}", "--out", "{anchor}/inside"], "the output would be inside the input"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_clean_line(tmp_path, capsys, inputs, argv, needle):
    names = {k: str(v) for k, v in inputs.items()}
    args = [a.format(out=tmp_path / "out", **names) for a in argv]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists() and not (inputs["anchor"] / "inside").exists()


def test_a_full_disk_is_one_clean_line(tmp_path, capsys, inputs, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out"))

    monkeypatch.setattr(checkpoint, "_write_all", full)
    capsys.readouterr()
    code = main(["branch", str(inputs["anchor"]), "--out", str(tmp_path / "out"), "--max-shard-size", "1KB"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_adapt_on_a_full_disk_is_one_clean_line(tmp_path, capsys, inputs, monkeypatch):
    """safetensors reports a full disk as its own error type, not OSError: still one line, no output."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    assert main(["branch", str(inputs["anchor"]), "--out", str(tmp_path / "moe")]) == 0
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    capsys.readouterr()
    code = main(["adapt", "--stage", "sft", "--model", str(tmp_path / "moe"), "--data", str(data),
                 "--out", str(tmp_path / "out"), "--steps", "1", "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"{tmp_path / 'out'}: cannot write the checkpoint" in err and "No space left on device" in err, err
    assert not (tmp_path / "out").exists()
