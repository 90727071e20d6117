"""Reading prompt files (plain text or JSONL) used to initialise routers from domain data."""

from __future__ import annotations

import json
from pathlib import Path

from barkit.errors import BarkitError


def _row_text(row: dict) -> str | None:
    if isinstance(row.get("text"), str):
        return row["text"]
    for key in ("prompt", "messages"):
        value = row.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            turns = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") != "assistant"]
            return "\n".join(t for t in turns if t) or None
    return None


def read_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """Prompts from a `.txt` file (one per line) or a JSONL file (`text`, `prompt` or `messages` column)."""
    path = Path(path)
    if not path.is_file():
        raise BarkitError(f"{path}: prompts file not found")
    prompts: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix in (".jsonl", ".json"):
            try:
                text = _row_text(json.loads(line))
            except (json.JSONDecodeError, AttributeError):
                raise BarkitError(f"{path}:{lineno}: not a JSON object") from None
            if text is None:
                raise BarkitError(f"{path}:{lineno}: no 'text', 'prompt' or 'messages' column")
        else:
            text = line
        prompts.append(text)
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise BarkitError(f"{path}: prompts file is empty")
    return prompts
