"""Rewards with an audit trail: per completion, the verifier, the answer read from it, the gold and the reward.

RL needs more than a number per rollout: a prompt set whose answers the verifier cannot read trains on zeros,
and a verifier that raises must not end a run hours in. `audit` runs one verifier over a batch and returns a
`RewardRecord` per completion; a verifier that raises is re-run item by item so that only the items that fail
score 0 (status `error`), and those are counted. `barkit reward` prints these records; GRPO logs the share of
rollouts with no answer (`frac_no_answer`) and the count of verifier failures (`verifier_errors`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from barkit.eval.math_answers import ERROR, FAILED, NO_ANSWER, judge_math
from barkit.eval.verifiers import VERIFIERS, as_texts, get_verifier

SCORED, UNSCORED = "scored", "unscored"
_MATH = {"math_answer", "math_final_answer"}


@dataclass(frozen=True)
class RewardRecord:
    """`reward` None means "not applicable" (unscored); `status` says how the reward came about: scored,
    unscored, error, or for math exact / verified / wrong / no_answer / timeout."""

    verifier: str
    reward: float | None
    extracted: str | None
    gold: str
    status: str


def reward_verifier(name: str) -> str:
    """The verifier RL uses for a row's verifier: its `_reward` variant where one is registered.

    >>> reward_verifier("code_tests"), reward_verifier("math_answer")
    ('code_tests_reward', 'math_answer')
    """
    return f"{name}_reward" if f"{name}_reward" in VERIFIERS else name


def describe_gold(columns: dict[str, Any]) -> str:
    """A short text of what a row is checked against, for audit tables.

    >>> describe_gold({"answer": "\\\\frac{1}{2}"}), describe_gold({"entry_point": "add", "tests": "assert add(1, 2)"})
    ('\\\\frac{1}{2}', 'tests of add()')
    """
    if "answer" in columns:
        return str(columns["answer"])
    if "entry_point" in columns:
        return f"tests of {columns['entry_point']}()"
    if "constraints" in columns:
        return ", ".join(str(c.get("type")) for c in columns["constraints"] or [])
    if "constraint" in columns:
        return str((columns["constraint"] or {}).get("func_name"))
    if "ground_truth" in columns:
        return json.dumps(columns["ground_truth"])[:80]
    if "harmful" in columns:
        return "refuse" if columns["harmful"] else "comply"
    return ""


def _math_records(name: str, texts: list[str], columns: dict[str, list], timeout_s: float) -> list[RewardRecord]:
    from barkit.eval.verifiers import final_answer_span

    out = []
    for text, gold in zip(texts, columns["answer"]):
        if gold is None:
            out.append(RewardRecord(name, None, None, "", UNSCORED))
            continue
        if name == "math_final_answer":
            span = final_answer_span(text)
            if span is None:
                out.append(RewardRecord(name, 0.0, None, str(gold), NO_ANSWER))
                continue
            text = span
        j = judge_math(text, str(gold), timeout_s)
        out.append(RewardRecord(name, j.reward, j.extracted, j.gold, j.status))
    return out


def audit(name: str, completions: list, columns: dict[str, list], timeout_s: float = 5.0) -> list[RewardRecord]:
    """One record per completion for verifier `name` (columns aligned with completions)."""
    texts = as_texts(completions)
    if name in _MATH:
        return _math_records(name, texts, columns, timeout_s)
    fn = get_verifier(name)
    golds = [describe_gold({k: v[i] for k, v in columns.items()}) for i in range(len(texts))]
    try:
        scores = fn(texts, **columns)
    except Exception:  # noqa: BLE001 - find the items that fail; the others keep their rewards
        scores = []
        for i in range(len(texts)):
            try:
                scores.extend(fn(texts[i:i + 1], **{k: v[i:i + 1] for k, v in columns.items()}))
            except Exception as exc:  # noqa: BLE001
                logging.getLogger(__name__).warning("verifier %s failed on one item: %s", name, exc)
                scores.append(ERROR)
    return [RewardRecord(name, 0.0 if s == ERROR else s, None, gold,
                         ERROR if s == ERROR else UNSCORED if s is None else SCORED)
            for s, gold in zip(scores, golds)]


def tally(records: list[RewardRecord]) -> Counter:
    """Counts a step logs: scored rollouts, those with no answer, and verifier failures (errors, timeouts).

    >>> sorted(tally([RewardRecord("m", 0.0, None, "1", "no_answer"), RewardRecord("m", 0.0, None, "1", "error"),
    ...               RewardRecord("m", None, None, "", "unscored")]).items())
    [('errors', 1), ('no_answer', 1), ('scored', 2)]
    """
    counts: Counter = Counter()
    for r in records:
        if r.reward is not None:
            counts["scored"] += 1
        if r.status == NO_ANSWER:
            counts["no_answer"] += 1
        if r.status in FAILED:
            counts["errors"] += 1
    return counts
