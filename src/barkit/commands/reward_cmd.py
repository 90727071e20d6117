"""`barkit reward --data ROWS --completions FILE`: audit the rewards of an RL prompt set before training on it.

Each row's verifier, the answer read from the completion, the gold and the reward, as RL would compute them,
so a user sees a LaTeX gold read as a number, or answers the verifier cannot extract, before spending GPU hours.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from barkit.errors import BarkitError


@dataclass
class RewardConfig:
    data: str = field(metadata={"help": "RL prompt rows (barkit's or open-instruct's RLVR rows)"})
    completions: str = field(metadata={"help": "JSONL, line k for row k: `completion` (str) or `completions` "
                                               "(list of str)"})
    out: str | None = field(default=None, metadata={"help": "also write every record to this JSONL file"})
    show: int = field(default=50, metadata={"help": "records to print (the summary covers all)"})
    timeout_s: float = field(default=5.0, metadata={"help": "math-verify's limit per parse and comparison"})


def read_completions(path: Path, rows: int) -> list[list[str]]:
    """One list of completions per row, in row order."""
    from barkit.train.rows import iter_rows

    out = []
    for where, row in iter_rows(path):
        value = row.get("completions", row.get("completion"))
        texts = value if isinstance(value, list) else [value]
        if value is None or not all(isinstance(t, str) for t in texts):
            raise BarkitError(f"{where}: needs 'completion' (a string) or 'completions' (a list of strings)")
        out.append(texts)
    if len(out) != rows:
        raise BarkitError(f"{path}: {len(out)} completion lines for {rows} data rows (line k answers row k)")
    return out


def _cell(text: str | None, width: int = 28) -> str:
    text = "-" if text is None else " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def run(cfg: RewardConfig) -> None:
    from barkit.eval.rewards import audit, reward_verifier, tally
    from barkit.eval.verifiers import VERIFIER_COLUMNS
    from barkit.train.data import rl_rows

    rows = rl_rows(cfg.data, VERIFIER_COLUMNS)
    completions = read_completions(Path(cfg.completions), len(rows))
    records = []
    for (where, _, name, columns), texts in zip(rows, completions):
        for record in audit(reward_verifier(name), texts, {k: [v] * len(texts) for k, v in columns.items()},
                            cfg.timeout_s):
            records.append((where, record))
    print("| row | verifier | extracted | gold | reward | status |\n|---|---|---|---|---|---|")
    for where, r in records[:cfg.show]:
        reward = "-" if r.reward is None else f"{r.reward:.2f}"
        print(f"| {where.rsplit('/', 1)[-1]} | {r.verifier} | {_cell(r.extracted)} | {_cell(r.gold)} | {reward} "
              f"| {r.status} |")
    if len(records) > cfg.show:
        print(f"({len(records) - cfg.show} more records not shown; --show N or --out FILE for all)")
    counts = tally([r for _, r in records])
    scored = [r.reward for _, r in records if r.reward is not None]
    statuses = Counter(r.status for _, r in records)
    mean = sum(scored) / len(scored) if scored else float("nan")
    print(f"{len(records)} completions, {counts['scored']} scored: mean reward {mean:.3f}; "
          f"no answer {counts['no_answer']}, verifier errors {counts['errors']}; "
          + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    if cfg.out:
        out = Path(cfg.out)
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for where, r in records:
                handle.write(json.dumps({"row": where, "verifier": r.verifier, "extracted": r.extracted,
                                         "gold": r.gold, "reward": r.reward, "status": r.status}) + "\n")
        os.replace(tmp, out)
