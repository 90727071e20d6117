"""Deterministic, atomic file output for the world generator."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path


def jsonl_bytes(rows: list[dict]) -> bytes:
    """Canonical JSONL: sorted keys, UTF-8, one row per line, so equal rows give equal bytes.

    >>> jsonl_bytes([{"b": 1, "a": "é"}])
    b'{"a": "\\xc3\\xa9", "b": 1}\\n'
    """
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp dir into place; an existing one is renamed aside first, then deleted."""
    old = None
    if final.exists():
        old = final.with_name(f"{tmp.name}.old")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old)
