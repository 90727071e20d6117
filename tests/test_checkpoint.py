import json
import threading

import pytest
import torch

from barkit.checkpoint import INDEX_NAME, CheckpointReader, ShardedWriter
from barkit.outputs import atomic_output_dir


def _write(tmp_path, tensors, max_shard, hashes: dict | None = None):
    """Write `tensors` as checkpoint tmp_path/ck; fill `hashes` with the writer's per-file hashes."""
    with atomic_output_dir(tmp_path / "ck") as tmp:
        writer = ShardedWriter(tmp, max_shard)
        for k, v in tensors.items():
            writer.add(k, v)
        writer.close()
        (tmp / "config.json").write_text("{}")
    (hashes if hashes is not None else {}).update(writer.file_hashes)
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


def test_sharded_writer_hashes_match_the_files_across_chunks(tmp_path, monkeypatch):
    """Shards are written and hashed in pieces on worker threads; the recorded sha256 is the file's."""
    import hashlib

    monkeypatch.setattr(ShardedWriter, "CHUNK", 96)  # several pieces per tensor, one not a multiple of 96
    tensors = {f"t{i}": torch.arange(100, dtype=torch.float32) * i for i in range(5)}
    hashes: dict = {}
    _write(tmp_path, tensors, 900, hashes)
    assert len(hashes) == 3
    for name, info in hashes.items():
        data = (tmp_path / "ck" / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    reader = CheckpointReader(tmp_path / "ck")
    assert all(torch.equal(reader.get(k), v) for k, v in tensors.items())


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "userspace-fallback"])
def test_on_disk_tensors_are_copied_byte_for_byte(tmp_path, monkeypatch, kernel_copy):
    """`TensorBytes` sources (copied file to file, never loaded) give the same files and hashes as tensors."""
    import hashlib
    import os

    monkeypatch.setattr(ShardedWriter, "CHUNK", 96)  # ranges split into pieces, one not a multiple of 96
    if not kernel_copy:
        def unsupported(*args, **kwargs):
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", unsupported)
    tensors = {f"t{i}": torch.arange(100, dtype=torch.float32) * (i + 1) for i in range(5)}
    tensors["half"] = torch.arange(7, dtype=torch.bfloat16)
    source = CheckpointReader(_write(tmp_path / "src", tensors, 900))
    mixed = {k: (source.locate(k) if i % 2 == 0 else source.get(k)) for i, k in enumerate(sorted(tensors))}
    assert any(not isinstance(v, torch.Tensor) for v in mixed.values())
    hashes: dict = {}
    copied = _write(tmp_path / "copied", mixed, 900, hashes)
    reference = _write(tmp_path / "ref", {k: source.get(k) for k in sorted(tensors)}, 900)
    names = sorted(hashes)
    assert names == sorted(p.name for p in reference.glob("*.safetensors"))
    for name in names:
        data = (copied / name).read_bytes()
        assert data == (reference / name).read_bytes()
        assert hashes[name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_a_source_truncated_after_locating_is_an_error_naming_it(tmp_path):
    from barkit.errors import BarkitError

    src = _write(tmp_path / "src", {"a": torch.ones(1000)}, "5GB")
    loc = CheckpointReader(src).locate("a")
    with open(loc.path, "r+b") as fh:
        fh.truncate(loc.offset + 100)
    out = tmp_path / "out"
    out.mkdir()
    writer = ShardedWriter(out, "5GB")
    writer.add("a", loc)
    with pytest.raises(BarkitError, match="model.safetensors: ended early"):
        writer.close()


def test_a_failed_background_write_raises_in_the_caller(tmp_path):
    out = tmp_path / "gone"
    out.mkdir()
    writer = ShardedWriter(out, 500)
    writer.add("a", torch.ones(100))
    out.rmdir()  # the shard's file cannot be created
    writer.add("b", torch.ones(100))  # flushes "a" in the background
    with pytest.raises(FileNotFoundError):
        writer.close()


def _gated_writes(monkeypatch) -> "threading.Event":
    """Hold every background shard write until the returned event is set."""

    gate = threading.Event()
    write = ShardedWriter._write_shard

    def gated(self, *args):
        assert gate.wait(20), "test gate never opened"
        write(self, *args)
    monkeypatch.setattr(ShardedWriter, "_write_shard", gated)
    return gate


def test_copy_shards_queue_freely_and_memory_shards_wait_for_room(tmp_path, monkeypatch):
    """Kernel-copy shards hold no tensor memory: the caller queues them and goes on (its arithmetic overlaps
    the copying). Shards of in-memory tensors are capped at one shard's bytes in flight."""
    import threading

    source = CheckpointReader(_write(tmp_path / "src", {"a": torch.arange(20.0)}, "5GB"))  # 80 bytes
    gate = _gated_writes(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    writer = ShardedWriter(out, 100)
    for i in range(4):
        writer.add(f"copy{i}", source.locate("a"))  # one 80-byte range per shard
    assert len(writer._in_flight) == 3  # three shards handed over while nothing was written
    writer.add("m0", torch.full((20,), 0.0))
    done = threading.Event()

    def more():
        writer.add("m1", torch.full((20,), 1.0))  # hands m0 over: 80 in-memory bytes in flight
        writer.add("m2", torch.full((20,), 2.0))  # m1 would make 160 > 100: waits until writes finish
        done.set()
    thread = threading.Thread(target=more)
    thread.start()
    assert not done.wait(0.5)
    gate.set()
    thread.join(20)
    assert done.is_set()
    writer.close()
    (out / "config.json").write_text("{}")
    reader = CheckpointReader(out)
    assert all(torch.equal(reader.get(f"copy{i}"), torch.arange(20.0)) for i in range(4))
    assert all(torch.equal(reader.get(f"m{i}"), torch.full((20,), float(i))) for i in range(3))


def test_memory_shards_do_not_wait_behind_queued_copies(tmp_path, monkeypatch):
    """The two lanes run side by side: while every copy shard is held, in-memory shards still go out."""
    import threading

    source = CheckpointReader(_write(tmp_path / "src", {"a": torch.arange(20.0)}, "5GB"))
    gate = threading.Event()
    write = ShardedWriter._write_shard

    def copies_held(self, *args):
        if "copy" in threading.current_thread().name:
            assert gate.wait(20), "test gate never opened"
        write(self, *args)
    monkeypatch.setattr(ShardedWriter, "_write_shard", copies_held)
    out = tmp_path / "out"
    out.mkdir()
    writer = ShardedWriter(out, 100)
    for i in range(3):
        writer.add(f"copy{i}", source.locate("a"))
    for i in range(4):
        writer.add(f"m{i}", torch.full((20,), float(i)))  # handing m1 over waits for m0's write, not the copies'
    assert not gate.is_set()
    writer._wait_oldest("memory")
    written = {f.name for f in out.iterdir()}
    assert {"shard-00003.tmp", "shard-00004.tmp"} <= written  # m0 and m1 are out (m2 may be on its way) ...
    assert not written & {f"shard-0000{i}.tmp" for i in range(3)}  # ... while the three copy shards are held
    gate.set()
    writer.close()
    (out / "config.json").write_text("{}")
    reader = CheckpointReader(out)
    assert all(torch.equal(reader.get(f"m{i}"), torch.full((20,), float(i))) for i in range(4))
    assert all(torch.equal(reader.get(f"copy{i}"), torch.arange(20.0)) for i in range(3))


def test_a_failure_in_the_caller_drops_queued_shards(tmp_path, monkeypatch):
    """Leaving the writer's block by an exception cancels shards not yet started and waits for the running
    one, so nothing writes into an output directory the caller is about to remove."""
    source = CheckpointReader(_write(tmp_path / "src", {"a": torch.arange(20.0)}, "5GB"))
    gate = _gated_writes(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    import threading

    with pytest.raises(RuntimeError, match="caller failed"):
        with ShardedWriter(out, 100) as writer:
            for i in range(5):
                writer.add(f"copy{i}", source.locate("a"))
            threading.Timer(0.3, gate.set).start()  # the running write finishes once the abort has begun
            raise RuntimeError("caller failed")
    assert writer._in_flight == [] and writer._lanes == {}  # threads joined
    written = sorted(p.name for p in out.iterdir())
    assert len(written) <= 1


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


def test_input_hashes_are_cached_by_file_identity(tmp_path, monkeypatch):
    """A parent's sha256 is computed once; a changed file (size or mtime) is hashed again; 'off' disables."""
    import os

    from barkit import checkpoint
    from barkit.checkpoint import cached_sha256_file, sha256_file

    cache = tmp_path / "cache.json"
    monkeypatch.setenv("BARKIT_HASH_CACHE", str(cache))
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    assert cached_sha256_file(f) == sha256_file(f) and cache.is_file()
    calls = []
    monkeypatch.setattr(checkpoint, "sha256_file", lambda p: calls.append(p) or "fresh")
    assert cached_sha256_file(f) != "fresh" and calls == []  # served from the cache
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(1, 1))
    assert cached_sha256_file(f) == "fresh" and len(calls) == 1  # same size, new mtime: re-hashed
    monkeypatch.setenv("BARKIT_HASH_CACHE", "off")
    assert cached_sha256_file(f) == "fresh" and len(calls) == 2


def test_reader_hashes_in_background_and_reuses_the_result(tmp_path):
    from barkit.checkpoint import CheckpointReader, sha256_file
    from barkit.tiny import make_dense_checkpoint

    ckpt = make_dense_checkpoint(tmp_path / "d", "olmo2", seed=0)
    reader = CheckpointReader(ckpt).hash_in_background()
    hashes = reader.weights_sha256()
    assert hashes == {name: sha256_file(ckpt / name) for name in reader.weight_files}
    assert reader.weights_sha256() == hashes and reader.weights_sha256() is not hashes  # a copy each time


def test_hashing_works_in_a_forked_child(tmp_path):
    """The hash pool is per process: a child forked after the parent hashed must not wait for the parent's
    worker threads (this once hung the SIGKILL/resume tests)."""
    import multiprocessing

    from barkit.checkpoint import CheckpointReader
    from barkit.tiny import make_dense_checkpoint

    ckpt = make_dense_checkpoint(tmp_path / "d", "olmo2", seed=0)
    expected = CheckpointReader(ckpt).weights_sha256()  # starts the parent's pool threads
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=lambda: queue.put(CheckpointReader(ckpt).weights_sha256()))
    child.start()
    child.join(60)
    assert child.exitcode == 0, "forked child hung or failed while hashing"
    assert queue.get(timeout=5) == expected


def _cache_writer(cache, paths):
    import os

    from barkit.checkpoint import cached_sha256_file

    os.environ["BARKIT_HASH_CACHE"] = str(cache)
    for path in paths:
        cached_sha256_file(path)


def test_concurrent_hash_cache_writers_lose_no_entry(tmp_path):
    """8 processes remember 25 files each at once: the file lock keeps every one of the 200 entries."""
    import multiprocessing

    files = []
    for i in range(200):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(str(i).encode() * 10)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_cache_writer, args=(tmp_path / "cache.json", files[k::8])) for k in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(w.exitcode == 0 for w in workers)
    assert len(json.loads((tmp_path / "cache.json").read_text())) == 200


def test_a_file_rewritten_with_the_same_size_and_mtime_is_hashed_again(tmp_path, monkeypatch):
    import os

    from barkit.checkpoint import cached_sha256_file, sha256_file

    monkeypatch.setenv("BARKIT_HASH_CACHE", str(tmp_path / "cache.json"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    first = cached_sha256_file(f)
    stat = f.stat()
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as before: only ctime tells
    assert cached_sha256_file(f) == sha256_file(f) != first


def test_provenance_hashes_are_never_taken_from_a_manifest(tmp_path, monkeypatch):
    from barkit.checkpoint import CheckpointReader, sha256_file
    from barkit.tiny import make_dense_checkpoint

    monkeypatch.setenv("BARKIT_HASH_CACHE", "off")
    ckpt = make_dense_checkpoint(tmp_path / "d", "olmo2", seed=0)
    name = "model.safetensors"
    size = (ckpt / name).stat().st_size
    (ckpt / "barkit_manifest.json").write_text(json.dumps(
        {"weights_sha256": {"files": {name: {"sha256": "0" * 64, "size": size}}}}))  # a lie of the right size
    assert CheckpointReader(ckpt).weights_sha256() == {name: sha256_file(ckpt / name)}


def _lying_header(path, header: object) -> None:
    """A safetensors file whose data section is 16 bytes (four float32), under the given header."""
    import struct

    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)


@pytest.mark.parametrize("header,needle", [
    ([1, 2], "the header is not a JSON object"),
    ({"a": {"dtype": "F32", "shape": [4]}}, "tensor 'a': the header entry needs dtype, shape and data_offsets"),
    ({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 16]}}, "shape [8] of F32 is 32 bytes, but its "
                                                                       "data_offsets span 16"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "tensor 'b': data_offsets overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, "tensor 'a': data_offsets overlap another "
                                                                      "tensor or leave a gap"),
    ({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, "unsupported dtype 'Q4'"),
])
def test_a_header_that_lies_is_refused_before_any_tensor_is_read(tmp_path, header, needle):
    from barkit.errors import BarkitError

    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    _lying_header(ckpt / "model.safetensors", header)
    with pytest.raises(BarkitError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        CheckpointReader(ckpt)


def test_branch_refuses_a_lying_header_even_with_verify_keys(tmp_path, capsys):
    """The header of the anchor claims a shape its bytes do not hold: refused, nothing written."""
    import struct

    from barkit.cli import main
    from barkit.tiny import make_dense_checkpoint

    anchor = make_dense_checkpoint(tmp_path / "anchor", "olmo2", seed=0)
    path = anchor / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    key = "model.norm.weight"
    header[key]["shape"] = [header[key]["shape"][0] * 2]
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    capsys.readouterr()
    code = main(["branch", str(anchor), "--out", str(tmp_path / "out"), "--verify", "keys"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and f"tensor '{key}'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchor"]
