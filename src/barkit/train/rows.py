"""Data files as rows: JSONL, JSON, parquet, and `datasets` directories, each row with the place errors name.

Users arrive with data in the formats of the field: JSONL (barkit's own, open-instruct's), a JSON array,
parquet files (the Hugging Face Hub's storage format; a directory of them is one data set), or a directory
written by `datasets.Dataset.save_to_disk` (Arrow stream files listed in `state.json`; a `DatasetDict`
directory reads its `train` split, or its only split). Arrow-backed files are read in record batches with
pyarrow, so a large file never sits in memory as Python objects.

Every row comes with `where`: `file:LINE` for JSONL, `file:row N` otherwise, so each bad input is reported
as one line naming the file and the row. A column mapping (`columns: {source: barkit}`) renames source
columns to the names barkit reads (`text`, `messages`, `prompt`, `completion`, `ground_truth`, ...)
before anything else looks at the row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from barkit.checkpoint import sha256_file
from barkit.errors import BarkitError

FORMATS = ".jsonl, .json, .parquet, a directory of .parquet files, or a datasets.save_to_disk directory"


def _jsonl(path: Path) -> Iterator[tuple[str, dict | None]]:
    """(where, row) per non-blank line; row is None where the line is not a JSON object."""
    lineno = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                yield f"{path}:{lineno}", row if isinstance(row, dict) else None
    except UnicodeDecodeError:
        raise BarkitError(f"{path}:{lineno + 1}: not valid UTF-8 text") from None


def _json(path: Path) -> Iterator[tuple[str, dict | None]]:
    """A JSON array of objects; a `.json` file that holds JSON Lines (as `datasets` writes them) reads as such."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise BarkitError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line
            yield from _jsonl(path)
            return
        raise BarkitError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, list):
        raise BarkitError(f"{path}: expected a JSON array of rows (or one JSON object per line)")
    for n, row in enumerate(value, 1):
        yield f"{path}:row {n}", row if isinstance(row, dict) else None


def _batches(path: Path, batches: Iterator, start: int) -> Iterator[tuple[str, dict]]:
    n = start
    for batch in batches:
        for row in batch.to_pylist():
            n += 1
            yield f"{path}:row {n}", row


def _parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise BarkitError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    yield from _batches(path, reader.iter_batches(batch_size=1024), 0)


def _arrow_dir(path: Path) -> Iterator[tuple[str, dict]]:
    """A `save_to_disk` directory: a DatasetDict (pick its split) or one Dataset (its Arrow stream files)."""
    import pyarrow as pa

    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        split = "train" if "train" in splits else splits[0] if len(splits) == 1 else None
        if split is None:
            raise BarkitError(f"{path}: a datasets directory with splits {', '.join(splits)} and no 'train'; "
                              f"give one split's directory, e.g. {path / splits[0]}")
        yield from _arrow_dir(path / split)
        return
    try:
        files = [f["filename"] for f in json.loads((path / "state.json").read_text())["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise BarkitError(f"{path}: not a datasets directory (no readable state.json listing its data files)") \
            from None
    n = 0
    for name in files:
        try:
            with pa.memory_map(str(path / name)) as source:
                reader = pa.ipc.open_stream(source)
                for where, row in _batches(path, iter(reader), n):
                    n += 1
                    yield where, row
        except (pa.ArrowException, OSError) as exc:
            raise BarkitError(f"{path / name}: not a readable Arrow file ({str(exc).splitlines()[0]})") from None


def _parquet_dir(path: Path) -> Iterator[tuple[str, dict]]:
    for file in sorted(path.rglob("*.parquet")):
        yield from _parquet(file)


def _reader(path: Path):
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return _arrow_dir
        if any(path.rglob("*.parquet")):
            return _parquet_dir
        raise BarkitError(f"{path}: a directory with no data barkit reads ({FORMATS})")
    if not path.is_file():
        raise BarkitError(f"{path}: data file not found")
    reader = {".jsonl": _jsonl, ".json": _json, ".parquet": _parquet}.get(path.suffix.lower())
    if reader is None:
        raise BarkitError(f"{path}: unknown data format '{path.suffix or path.name}' (barkit reads {FORMATS})")
    return reader


def data_digest(path: str | Path) -> str:
    """sha256 of a data file, or of a data directory's files (their names and contents): what a manifest
    records and a resume compares."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    listing = [f"{f.relative_to(path)}\0{sha256_file(f)}" for f in sorted(path.rglob("*")) if f.is_file()]
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()


def rename(where: str, row: dict, columns: dict[str, str] | None) -> dict:
    """`row` with source columns renamed to barkit's (`columns`: {source name: barkit name}).

    >>> rename("f:1", {"conversation": [1], "id": 3}, {"conversation": "messages"})
    {'id': 3, 'messages': [1]}
    """
    if not columns:
        return row
    row = dict(row)
    for source, target in columns.items():
        if source not in row:
            raise BarkitError(f"{where}: missing column '{source}' (named in the column mapping)")
        row[target] = row.pop(source)
    return row


def iter_rows(path: str | Path, columns: dict[str, str] | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) for each row of a data file or directory, read as it goes; stops at the first bad row."""
    path = Path(path)
    for where, row in _reader(path)(path):
        if row is None:
            raise BarkitError(f"{where}: malformed JSON (not an object)")
        yield where, rename(where, row, columns)


def read_rows(path: str | Path, columns: dict[str, str] | None = None) -> list[tuple[str, dict]]:
    """Every row of a data file; malformed JSON lines are reported together, an empty file is an error."""
    path = Path(path)
    rows, bad = [], []
    for where, row in _reader(path)(path):
        if row is None:
            bad.append(where.rsplit(":", 1)[1])
        else:
            rows.append((where, row))
    if bad:
        places = ", ".join(bad[:10]) + (f" (and {len(bad) - 10} more)" if len(bad) > 10 else "")
        if bad[0].isdigit():  # JSONL line numbers
            places = f"line{'s' * (len(bad) > 1)} {places}"
        raise BarkitError(f"{path}: malformed JSON (not an object) on {places}")
    if not rows:
        raise BarkitError(f"{path}: data file is empty")
    return [(where, rename(where, row, columns)) for where, row in rows]
