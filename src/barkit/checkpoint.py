"""Checkpoint IO: a lazy safetensors reader, a streaming sharded writer, atomic output directories, manifests.

Weight surgery (branch, compose, merge) never builds an nn.Module: it reads one tensor at a time and writes
shards as they fill, so peak memory is a few tensors whatever the model size. Weights are only ever read
from safetensors (no pickle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import struct
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

import barkit
from barkit.errors import BarkitError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MANIFEST_NAME = "barkit_manifest.json"
CONFIG_NAME = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json")


def _check_safetensors_file(path: Path) -> dict:
    """Validate a safetensors file's header against its size; return the header (tensor name -> info),
    with the byte offset where tensor data starts under the key `__data_start__`."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("file is shorter than a safetensors header")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > size - 8:
                raise ValueError("header length exceeds the file size")
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BarkitError(f"{path}: not a valid safetensors file ({exc})") from None
    end = _check_header(path, header)
    if 8 + header_len + end != size:
        raise BarkitError(f"{path}: truncated or corrupt safetensors file "
                          f"(expected {8 + header_len + end} bytes, found {size})")
    header["__data_start__"] = 8 + header_len
    return header


def _check_header(path: Path, header: object) -> int:
    """Every tensor entry names a known dtype, a shape and offsets whose span is exactly shape x dtype bytes,
    and the spans tile the data section without gaps or overlaps: a header that lies is refused before any
    tensor is read. Returns the data section's length."""
    if not isinstance(header, dict):
        raise BarkitError(f"{path}: not a valid safetensors file (the header is not a JSON object)")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        shape = info.get("shape") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)
                and isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise BarkitError(f"{path}: tensor '{name}': the header entry needs dtype, shape and data_offsets")
        dtype = _TORCH_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise BarkitError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')!r}")
        expected = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != expected:
            raise BarkitError(f"{path}: tensor '{name}': shape {shape} of {info['dtype']} is {expected} bytes, "
                              f"but its data_offsets span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise BarkitError(f"{path}: tensor '{name}': data_offsets overlap another tensor or leave a gap")
        position = end
    return position


@dataclass(frozen=True)
class TensorBytes:
    """A tensor still on disk: its byte range in a safetensors file. `ShardedWriter` copies it into the output
    in the kernel (`copy_file_range`), so pass-through tensors never enter this process's memory."""

    path: Path
    offset: int  # absolute byte offset of the tensor's data in `path`
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    def numel(self) -> int:
        return self.nbytes // self.element_size()

    def element_size(self) -> int:
        return self.dtype.itemsize


class CheckpointReader:
    """Lazy view of a Hugging Face checkpoint directory: config plus tensors read one at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BarkitError(f"{self.path}: no such checkpoint directory")
        if not self.path.is_dir():
            raise BarkitError(f"{self.path}: a checkpoint must be a directory")
        config_path = self.path / CONFIG_NAME
        if not config_path.is_file():
            raise BarkitError(f"{config_path}: missing (not a Hugging Face checkpoint)")
        try:
            self.config: dict = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BarkitError(f"{config_path}: invalid JSON ({exc})") from None
        if not isinstance(self.config, dict):
            raise BarkitError(f"{config_path}: expected a JSON object of config keys, got {type(self.config).__name__}")
        self.key_to_file = self._read_index()
        self._headers: dict[str, dict] = {}
        self._handles: dict[str, object] = {}
        self._data_start: dict[str, int] = {}
        self._hashes: Future | None = None

    def _read_index(self) -> dict[str, str]:
        index_path = self.path / INDEX_NAME
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise BarkitError(f"{index_path}: invalid index ({exc})") from None
            for name in set(weight_map.values()):
                if not (self.path / name).is_file():
                    raise BarkitError(f"{self.path / name}: listed in {INDEX_NAME} but missing")
            return dict(weight_map)
        single = self.path / SINGLE_NAME
        if single.is_file():
            header = _check_safetensors_file(single)
            return {k: SINGLE_NAME for k in header if k not in ("__metadata__", "__data_start__")}
        if any(self.path.glob("*.bin")) or any(self.path.glob("*.pt")):
            raise BarkitError(f"{self.path}: only pickle weights found; barkit reads safetensors only "
                              "(convert with transformers' save_pretrained(safe_serialization=True))")
        raise BarkitError(f"{self.path}: no safetensors weights ({SINGLE_NAME} or {INDEX_NAME})")

    @property
    def weight_files(self) -> list[str]:
        return sorted(set(self.key_to_file.values()))

    def keys(self) -> list[str]:
        return sorted(self.key_to_file)

    def __contains__(self, key: str) -> bool:
        return key in self.key_to_file

    def check_files(self) -> "CheckpointReader":
        """Validate every weight file's header against its bytes now (before a loader trusts them)."""
        for name in self.weight_files:
            self._header(name)
        return self

    def _header(self, name: str) -> dict:
        if name not in self._headers:
            self._headers[name] = _check_safetensors_file(self.path / name)
            self._data_start[name] = self._headers[name]["__data_start__"]
        return self._headers[name]

    def shape(self, key: str) -> list[int]:
        return list(self._header(self.key_to_file[key])[key]["shape"])

    def nbytes(self, key: str) -> int:
        start, end = self._header(self.key_to_file[key])[key]["data_offsets"]
        return end - start

    def dtype(self, key: str) -> torch.dtype:
        return self.locate(key).dtype

    def locate(self, key: str) -> TensorBytes:
        """Where tensor `key`'s bytes are on disk, without reading them (see `TensorBytes`)."""
        if key not in self.key_to_file:
            raise BarkitError(f"{self.path}: tensor '{key}' not found")
        name = self.key_to_file[key]
        info = self._header(name)[key]
        dtype = _TORCH_DTYPES.get(info["dtype"])
        if dtype is None:
            raise BarkitError(f"{self.path / name}: tensor '{key}' has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        return TensorBytes(self.path / name, self._data_start[name] + start, end - start, dtype, tuple(info["shape"]))

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor straight into fresh memory (`readinto`: no mmap pages held, no second copy)."""
        loc = self.locate(key)
        buf = torch.empty(loc.nbytes, dtype=torch.uint8)
        self.read_into(key, 0, memoryview(buf.numpy()))
        return buf.view(loc.dtype).reshape(loc.shape)

    def read_into(self, key: str, start: int, out: memoryview) -> None:
        """Fill `out` with tensor `key`'s bytes from byte `start` on: streaming a tensor in pieces through one
        reused buffer avoids the page faults of fresh memory and keeps the pieces in cache."""
        loc = self.locate(key)
        name = self.key_to_file[key]
        if start < 0 or start + len(out) > loc.nbytes:
            raise ValueError(f"bytes {start}..{start + len(out)} outside tensor '{key}' ({loc.nbytes} bytes)")
        if name not in self._handles:
            self._handles[name] = open(self.path / name, "rb")
        fh = self._handles[name]
        fh.seek(loc.offset + start)
        if len(out) and fh.readinto(out) != len(out):
            raise BarkitError(f"{self.path / name}: truncated while reading tensor '{key}'")

    def manifest(self) -> dict | None:
        return read_manifest(self.path)

    def hash_in_background(self) -> "CheckpointReader":
        """Start hashing the weight files on a worker thread (hashlib releases the GIL), so a job's provenance
        hashing overlaps its reading and writing instead of following it. `weights_sha256` joins it."""
        if self._hashes is None:
            self._hashes = _hash_pool().submit(self._compute_weights_sha256)
        return self

    def weights_sha256(self) -> dict[str, str]:
        """sha256 per weight file, computed (or remembered by the hash cache for this very file: path, size,
        mtime, ctime, inode); never taken from a manifest, which a copied or edited file would not match."""
        return dict(self.hash_in_background()._hashes.result())

    def _compute_weights_sha256(self) -> dict[str, str]:
        return {name: cached_sha256_file(self.path / name) for name in self.weight_files}

    def fingerprint(self) -> str:
        """One hash for the whole weight set (combines the per-file hashes)."""
        return combine_hashes(self.weights_sha256())


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


_POOL: list[ThreadPoolExecutor] = []
_CACHE_LOCK = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="barkit-sha256"))
    return _POOL[0]


def _reset_after_fork() -> None:
    """A forked child has none of the parent's worker threads (a submit would wait forever) and may inherit
    the cache lock held: give it its own pool and lock."""
    global _CACHE_LOCK
    _POOL.clear()
    _CACHE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def hash_cache_path() -> Path:
    """Where input-file hashes are remembered: $BARKIT_HASH_CACHE, else ~/.cache/barkit/sha256.json."""
    env = os.environ.get("BARKIT_HASH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "barkit" / "sha256.json"


def _stat_key(path: Path) -> dict:
    """What must be unchanged for a remembered hash to hold: a rewrite in place changes ctime even when it
    keeps the size and restores the mtime."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
            "dev": st.st_dev}


@contextlib.contextmanager
def _cache_file_lock(cache_file: Path):
    """Serialise read-modify-write of the cache across processes (and threads, via `_CACHE_LOCK`)."""
    with _CACHE_LOCK:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(cache_file.with_name(cache_file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a read-only home: no cache updates, no lock needed
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)


def cached_sha256_file(path: Path) -> str:
    """sha256 of an input file, remembered by (path, size, mtime, inode) the way git's index remembers
    file hashes: re-using the same anchor or base for many jobs hashes its gigabytes once, not every time.
    Set BARKIT_HASH_CACHE=off to always hash."""
    cache_file = hash_cache_path()
    if str(cache_file) == "off":
        return sha256_file(path)
    key, stat = str(Path(path).resolve()), _stat_key(Path(path))
    with _CACHE_LOCK:
        cache = _read_cache(cache_file)
    entry = cache.get(key)
    if entry and entry.get("stat") == stat:
        return entry["sha256"]
    digest = sha256_file(path)
    with _cache_file_lock(cache_file) as writable:
        if writable:
            cache = _read_cache(cache_file)
            cache[key] = {"stat": stat, "sha256": digest}
            try:
                tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(json.dumps(cache, sort_keys=True))
                os.replace(tmp, cache_file)
            except OSError:
                pass  # a full or read-only disk only costs re-hashing next time
    return digest


def _read_cache(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def combine_hashes(per_file: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(per_file):
        h.update(f"{name}:{per_file[name]}\n".encode())
    return h.hexdigest()


_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}


_TORCH_DTYPES = {name: dtype for dtype, name in _ST_DTYPES.items()}


# Output shard size for weight surgery. The writer holds about two shards of computed tensors (merge, compose's
# shared means), so this bounds their memory: before pass-through tensors were copied in the kernel, a 1.28B bf16
# branch peaked at 1.8 largest tensors of RSS at 200MB shards, 9.2 at 1GB and 19.8 at 5GB. Branch now holds no
# tensor data at all (147 MB anonymous at 200MB and 1GB alike). A 7B model gets ~70 files.
DEFAULT_SHARD_SIZE = "200MB"


def parse_size(size: str | int) -> int:
    """'5GB' -> bytes (HF's max_shard_size convention, decimal units)."""
    if isinstance(size, int):
        return size
    text = size.strip().upper()
    try:
        for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
            if text.endswith(unit):
                return int(float(text[: -len(unit)]) * factor)
        return int(text)
    except ValueError:
        raise BarkitError(f"config key 'max_shard_size': {size!r} is not a size like 200MB or 5GB") from None


def hash_outputs_field():
    """The `hash_outputs` config field of the byte-copy surgery commands (branch, compose, select)."""
    return field(default=False, metadata={
        "help": "sha256 the written files into the manifest now (CPU-bound, ~1 GB/s); by default they are "
                "hashed, and cached, the first time a later job reads this checkpoint"})


class ShardedWriter:
    """Streams tensors into HF-named safetensors shards, flushing each shard as soon as it is full.

    A full shard is written and hashed on a worker thread while the caller assembles the next one (file
    writes and hashlib release the GIL), so reading, writing and hashing overlap. Shards go out in two lanes
    that run side by side: one for shards mostly of in-memory tensors, one for shards mostly of `TensorBytes`
    (kernel copies of input ranges). Each lane holds at most one shard's worth of in-memory tensors in
    flight, so peak memory is about two shards, three at worst (`DEFAULT_SHARD_SIZE`; 5GB shards made branch
    of a 1.3B model hold 4 GB). Copy shards hold next to no memory and queue freely, so the caller's
    arithmetic (means, checks) and its in-memory shards overlap the copying instead of waiting behind it.

    `hash_outputs=False` skips the sha256 of the written files: weight surgery that only copies bytes is
    otherwise bound by sha256 (~1 GB/s on one core) rather than by the disk. `file_hashes` then records sizes
    only, and the files are hashed (and cached) the first time a later job reads them as a parent.
    """

    CHUNK = 64 << 20  # write and hash in pieces, so hashing piece i overlaps writing it

    def __init__(self, out_dir: Path, max_shard_size: str | int = DEFAULT_SHARD_SIZE, metadata: dict | None = None,
                 hash_outputs: bool = True):
        self.out_dir = Path(out_dir)
        self.hash_outputs = hash_outputs
        self.max_bytes = parse_size(max_shard_size)
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []
        self.file_hashes: dict[str, dict] = {}
        self._hashes: dict[str, dict] = {}
        self.total_size = 0
        self._lanes: dict[str, ThreadPoolExecutor] = {}  # "memory" / "copy" writer threads, started on use
        self._hasher: ThreadPoolExecutor | None = None
        self._in_flight: list[tuple[Future, int, str]] = []  # (shard write, in-memory bytes, lane), oldest first

    def add(self, key: str, tensor: torch.Tensor | TensorBytes) -> None:
        """Queue a tensor, or a `TensorBytes` range of an input file (copied in the kernel, never loaded)."""
        if key in self._pending or any(key in keys for _, keys in self._shards):
            raise ValueError(f"tensor '{key}' written twice")
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_bytes:
            self._flush()
        self._pending[key] = tensor if isinstance(tensor, TensorBytes) else tensor.detach().contiguous().cpu()
        self._pending_bytes += size
        self.total_size += size

    def _flush(self) -> None:
        """Hand the pending shard to a writer lane once the in-memory bytes in flight leave room for it."""
        name = f"shard-{len(self._shards):05d}.tmp"
        keys = sorted(self._pending)
        self._shards.append((name, keys))
        pending, total, self._pending, self._pending_bytes = self._pending, self._pending_bytes, {}, 0
        memory = sum(t.numel() * t.element_size() for t in pending.values() if not isinstance(t, TensorBytes))
        lane = "memory" if 2 * memory > total else "copy"
        while (queued := self._lane_memory(lane)) and sum(queued) + memory > self.max_bytes:
            self._wait_oldest(lane)
        if lane not in self._lanes:
            self._lanes[lane] = ThreadPoolExecutor(1, thread_name_prefix=f"barkit-write-{lane}")
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(1, thread_name_prefix="barkit-hash")
        self._in_flight.append((self._lanes[lane].submit(self._write_shard, name, keys, pending), memory, lane))

    def _lane_memory(self, lane: str) -> list[int]:
        """In-memory bytes of each shard in flight in `lane`."""
        return [memory for _, memory, where in self._in_flight if where == lane]

    def _wait_oldest(self, lane: str | None = None) -> None:
        i = next(i for i, (_, _, where) in enumerate(self._in_flight) if lane in (None, where))
        future = self._in_flight.pop(i)[0]
        future.result()  # re-raises a failed write here, in the caller's thread

    def _wait(self) -> None:
        while self._in_flight:
            self._wait_oldest()

    def _write_shard(self, name: str, keys: list[str], tensors: dict[str, torch.Tensor | TensorBytes]) -> None:
        """Write one safetensors file, hashing the bytes as they go out: in-memory pieces from memory, pieces
        copied in the kernel from the output's fresh page cache."""
        header: dict = {"__metadata__": self.metadata}
        offset = 0
        for key in keys:
            t = tensors[key]
            size = t.numel() * t.element_size()
            header[key] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                           "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8-byte alignment
        pieces: list = [memoryview(struct.pack("<Q", len(raw)) + raw)]
        for key in keys:
            t = tensors[key]
            if isinstance(t, TensorBytes):
                pieces.extend((t, i, min(self.CHUNK, t.nbytes - i)) for i in range(0, t.nbytes, self.CHUNK))
            else:
                data = memoryview(t.reshape(-1).view(torch.uint8).numpy())
                pieces.extend(data[i:i + self.CHUNK] for i in range(0, len(data), self.CHUNK))
        digest = hashlib.sha256()
        hashing: Future | None = None
        fd = os.open(self.out_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        sources = _FileCache()
        try:
            position = 0
            for piece in pieces:
                if isinstance(piece, memoryview):
                    _write_all(fd, piece)
                    job, length = (digest.update, piece), len(piece)
                else:
                    src, start, length = piece
                    _copy_range(sources.fd(src.path), src.offset + start, fd, length, src.path)
                    job = (_hash_range, digest, self.out_dir / name, position, length)
                if hashing is not None:
                    hashing.result()  # sha256 is sequential: piece i-1 is in before piece i
                if self.hash_outputs:
                    hashing = self._hasher.submit(*job)
                position += length
            if hashing is not None:
                hashing.result()
        finally:
            os.close(fd)
            sources.close()
        size = 8 + len(raw) + offset
        self._hashes[name] = {"sha256": digest.hexdigest(), "size": size} if self.hash_outputs else {"size": size}

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close on success; on a failure in the caller, `abort` (the output directory is about to go)."""
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop queued shards and let running ones finish, so no thread still writes into the output
        directory while the caller removes it."""
        self._stop_threads(cancel=True)
        self._in_flight = []

    def _stop_threads(self, cancel: bool) -> None:
        for pool in (*self._lanes.values(), self._hasher):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=cancel)
        self._lanes, self._hasher = {}, None

    def close(self) -> dict[str, str]:
        """Write the last shard, give shards their HF names, write the index; return key -> file."""
        try:
            if self._pending or not self._shards:
                self._flush()
            self._wait()
        finally:
            self._stop_threads(cancel=False)
        n = len(self._shards)
        weight_map = {}
        for i, (tmp_name, keys) in enumerate(self._shards):
            final = SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.out_dir / tmp_name, self.out_dir / final)
            self.file_hashes[final] = self._hashes[tmp_name]
            weight_map.update({k: final for k in keys})
        if n > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return weight_map


class _FileCache:
    """Read-only descriptors of the input files a shard copies from, opened once per shard."""

    def __init__(self):
        self._fds: dict[Path, int] = {}

    def fd(self, path: Path) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def _copy_range(src_fd: int, src_offset: int, dst_fd: int, length: int, src_path: Path) -> None:
    """Append `length` bytes of the source file at `src_offset` to `dst_fd`: in the kernel with
    copy_file_range where the filesystem allows it, else through a userspace buffer."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src_fd, dst_fd, length - done, src_offset + done)
        except OSError:  # EXDEV / EINVAL / ENOSYS on some filesystems and kernels: copy by hand
            n = len(chunk := os.pread(src_fd, min(length - done, 16 << 20), src_offset + done))
            _write_all(dst_fd, memoryview(chunk))
        if n == 0:
            raise BarkitError(f"{src_path}: ended early while copying a tensor (file changed or truncated)")
        done += n


def _hash_range(digest, path: Path, offset: int, length: int, chunk: int = 8 << 20) -> None:
    """Feed `length` bytes of `path` at `offset` to `digest` (the output's just-written page cache)."""
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        buf = bytearray(min(chunk, length))
        view = memoryview(buf)
        done = 0
        while done < length:
            n = fh.readinto(view[:min(chunk, length - done)])
            if not n:
                raise BarkitError(f"{path}: shorter than written while hashing it")
            digest.update(view[:n])
            done += n


def read_manifest(ckpt: str | Path) -> dict | None:
    """A checkpoint's barkit manifest, None when it has none (not written by barkit)."""
    path = Path(ckpt) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BarkitError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise BarkitError(f"{path}: a manifest must be a JSON object")
    return manifest


def parent_dirs(manifest: dict) -> dict[str, Path]:
    """The checkpoint directories a manifest names as parents ({role: path}): one step up the lineage."""
    return {name: Path(p["path"]) for name, p in (manifest.get("parents") or {}).items()
            if isinstance(p, dict) and p.get("path")}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


def write_metadata(out: Path, stage: str, cfg, parents: dict[str, CheckpointReader | Path],
                   weights: dict[str, dict] | None, *, tokenizer_src: Path, config: dict | None = None,
                   seed: int | None = None, extra: dict | None = None) -> None:
    """Every output's epilogue, written once for all writers: config.json (when given), the tokenizer, the
    resolved barkit config (`cfg`, a config dataclass or a plain dict) and the provenance manifest."""
    settings = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    if config is not None:
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    copy_tokenizer(tokenizer_src, out)
    (out / "barkit_config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    write_json(out / MANIFEST_NAME, build_manifest(stage, parents, settings, seed, weights, extra))


def build_manifest(stage: str, parents: dict[str, CheckpointReader | Path], config: dict,
                   seed: int | None, weights: dict[str, dict] | None = None, extra: dict | None = None) -> dict:
    """Provenance: parents with their weight hashes, version, seed, command line, and our own file hashes."""
    parent_info = {}
    for name, parent in parents.items():
        if isinstance(parent, CheckpointReader):
            hashes = parent.weights_sha256()
            parent_info[name] = {"path": str(parent.path.resolve()), "weights_sha256": combine_hashes(hashes),
                                 "files": hashes}
        else:
            parent_info[name] = {"path": str(Path(parent).resolve()),
                                 "sha256": sha256_file(Path(parent)) if Path(parent).is_file() else None}
    manifest = {
        "barkit_version": barkit.__version__,
        "stage": stage,
        "parents": parent_info,
        "seed": seed,
        "command": " ".join(sys.argv),
        "config": config,
        **(extra or {}),
    }
    if weights is not None and all("sha256" in v for v in weights.values()):
        manifest["weights_sha256"] = {"combined": combine_hashes({k: v["sha256"] for k, v in weights.items()}),
                                      "files": weights}
    elif weights is not None:  # written with hash_outputs=False: hashed when a later job first reads them
        manifest["weights_sha256"] = None
        manifest["weights_files"] = weights
    return manifest
