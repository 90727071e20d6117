"""Token shards: data tokenised once into memory-mapped arrays, streamed by training.

`barkit data tokenize` reads JSONL line by line and appends to flat binary arrays (as OLMo-core's numpy
datasets do): `tokens.bin` (uint32 token ids), `targets.bin` (uint8, 1 where the loss is taken) and
`offsets.bin` (uint64, where each sequence starts). Text is packed into full sequences of `seq_len`
tokens (documents separated by EOS); chats are one sequence each, with loss on assistant tokens only.
`meta.json` records the kind, seq_len, counts, and the hashes of the tokenizer and of every source
file, so training can refuse shards made for another tokenizer or sequence length.

Training opens the arrays with `numpy.memmap` and builds only the examples of the current step: memory
does not grow with the data, and the batch of step s is still a pure function of (data, seed, s).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from barkit.checkpoint import write_json
from barkit.errors import BarkitError
from barkit.outputs import atomic_output_dir
from barkit.train.chat import check_template
from barkit.train.data import IGNORE, Example, chat_example, column, require_eos
from barkit.train.rows import data_digest, iter_rows

META = "meta.json"
FORMAT = "barkit-token-shards"
VERSION = 1
KINDS = ("text", "chat")


def tokenizer_digest(tokenizer) -> str:
    """Identity of a tokenizer: its full serialised state (vocabulary, merges, special tokens, template)."""
    state = tokenizer.backend_tokenizer.to_str() + (tokenizer.chat_template or "")
    return hashlib.sha256(state.encode()).hexdigest()


class _Writer:
    def __init__(self, out: Path):
        self.files = {name: (out / f"{name}.bin").open("wb") for name in ("tokens", "targets", "offsets")}
        self.position, self.sequences = 0, 0
        self.files["offsets"].write(np.array([0], dtype=np.uint64).tobytes())

    def add(self, ids: list[int], targets: list[int]) -> None:
        self.files["tokens"].write(np.asarray(ids, dtype=np.uint32).tobytes())
        self.files["targets"].write(np.asarray(targets, dtype=np.uint8).tobytes())
        self.position += len(ids)
        self.sequences += 1
        self.files["offsets"].write(np.array([self.position], dtype=np.uint64).tobytes())

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def _write_text(paths: list[Path], tokenizer, seq_len: int, writer: _Writer, columns: dict | None,
                batch: int = 1024) -> None:
    require_eos(tokenizer)
    carry: list[int] = []
    for path in paths:
        texts: list[str] = []
        for where, row in iter_rows(path, columns):
            texts.append(column(where, row, "text", str))
            if len(texts) == batch:
                carry = _pack(texts, tokenizer, seq_len, writer, carry)
                texts = []
        carry = _pack(texts, tokenizer, seq_len, writer, carry)


def _pack(texts: list[str], tokenizer, seq_len: int, writer: _Writer, carry: list[int]) -> list[int]:
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []:
        carry.extend(ids)
        carry.append(tokenizer.eos_token_id)
        while len(carry) >= seq_len:
            writer.add(carry[:seq_len], [1] * seq_len)
            carry = carry[seq_len:]
    return carry


def _write_chats(paths: list[Path], tokenizer, seq_len: int, writer: _Writer, columns: dict | None) -> None:
    check_template(tokenizer)
    for path in paths:
        for where, row in iter_rows(path, columns):
            example, _ = chat_example(where, row, tokenizer, seq_len)
            if example.num_targets:
                writer.add(example.input_ids, [int(t != IGNORE) for t in example.labels])


def tokenize_to_shards(paths: list[str], tokenizer, kind: str, seq_len: int, out: str | Path,
                       overwrite: bool = False, columns: dict | None = None) -> Path:
    """Write token shards for `paths` into `out` (atomically); returns `out`."""
    if kind not in KINDS:
        raise BarkitError(f"kind '{kind}': choose one of {', '.join(KINDS)}")
    sources = [Path(p) for p in paths]
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        writer = _Writer(tmp)
        try:
            (_write_text if kind == "text" else _write_chats)(sources, tokenizer, seq_len, writer, columns)
        finally:
            writer.close()
        if writer.sequences == 0:
            raise BarkitError(f"{', '.join(map(str, paths))}: no sequence of seq_len={seq_len} (too little data)")
        write_json(tmp / META, {"format": FORMAT, "version": VERSION, "kind": kind, "seq_len": seq_len,
                                "sequences": writer.sequences, "tokens": writer.position,
                                "tokenizer_sha256": tokenizer_digest(tokenizer),
                                "sources": {str(p.resolve()): data_digest(p) for p in sources}})
    return Path(out)


def is_shards(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


class TokenShards:
    """A read-only sequence of `Example`s backed by memory-mapped arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / META).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BarkitError(f"{self.path / META}: unreadable ({exc})") from None
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise BarkitError(f"{self.path}: not barkit token shards of version {VERSION}")
        self.tokens = np.memmap(self.path / "tokens.bin", dtype=np.uint32, mode="r")
        self.targets = np.memmap(self.path / "targets.bin", dtype=np.uint8, mode="r")
        self.offsets = np.memmap(self.path / "offsets.bin", dtype=np.uint64, mode="r")
        if len(self.offsets) != self.meta["sequences"] + 1 or len(self.tokens) != self.meta["tokens"] \
                or len(self.targets) != len(self.tokens):
            raise BarkitError(f"{self.path}: arrays do not match meta.json (truncated or mixed shards)")

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def check(self, tokenizer, seq_len: int, kind: str) -> "TokenShards":
        """Refuse shards made for another tokenizer, sequence length or kind of data."""
        if self.kind != kind:
            raise BarkitError(f"{self.path}: {self.kind} shards, but this stage trains on {kind}")
        if self.meta["seq_len"] != seq_len:
            raise BarkitError(f"{self.path}: tokenised for seq_len={self.meta['seq_len']}, the stage uses "
                              f"sequences.seq_len={seq_len}")
        if self.meta["tokenizer_sha256"] != tokenizer_digest(tokenizer):
            raise BarkitError(f"{self.path}: tokenised with another tokenizer than the model's")
        return self

    def __len__(self) -> int:
        return int(self.meta["sequences"])

    def __getitem__(self, index: int) -> Example:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        ids = self.tokens[start:end].astype(np.int64).tolist()
        keep = self.targets[start:end]
        return Example(ids, [t if k else IGNORE for t, k in zip(ids, keep)])
