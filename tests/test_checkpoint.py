import json

import pytest
import torch

from barkit.checkpoint import INDEX_NAME, CheckpointReader, ShardedWriter, atomic_output_dir


def _write(tmp_path, tensors, max_shard):
    with atomic_output_dir(tmp_path / "ck") as tmp:
        writer = ShardedWriter(tmp, max_shard)
        for k, v in tensors.items():
            writer.add(k, v)
        writer.close()
        (tmp / "config.json").write_text("{}")
    return tmp_path / "ck"


def test_sharded_writer_round_trips_and_names_shards_like_hf(tmp_path):
    tensors = {f"t{i}": torch.full((100,), float(i)) for i in range(5)}  # 400 bytes each
    out = _write(tmp_path, tensors, 900)
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((out / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == 2000
    reader = CheckpointReader(out)
    assert reader.keys() == sorted(tensors)
    for k, v in tensors.items():
        assert torch.equal(reader.get(k), v)


def test_single_shard_is_model_safetensors(tmp_path):
    out = _write(tmp_path, {"a": torch.ones(3)}, "5GB")
    assert [p.name for p in out.iterdir() if p.suffix == ".safetensors"] == ["model.safetensors"]
    assert not (out / INDEX_NAME).exists()


def test_atomic_output_dir_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "ck") as tmp:
            (tmp / "half.bin").write_text("x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_overwrite_replaces_only_on_success(tmp_path):
    target = tmp_path / "ck"
    target.mkdir()
    (target / "old").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target, overwrite=True):
            raise RuntimeError("crash")
    assert (target / "old").exists()
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"] and (target / "new").exists()
