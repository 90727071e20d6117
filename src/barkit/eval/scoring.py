"""Scoring: run each item's verifier on its completions and aggregate like the BAR model card.

Item score -> benchmark score (mean; safety = mean of refusal rate and compliance rate) -> category score
(mean of its benchmarks) -> overall (mean of categories). Scores are reported on a 0-100 scale, each with
its standard error over the items (the sample standard deviation of item scores over sqrt(n), propagated
through the means), so a reader can tell a gap from noise.
"""

from __future__ import annotations

from collections import defaultdict
from math import comb, sqrt

CATEGORIES = ("knowledge", "reasoning", "chat", "math", "code", "tool_use", "safety")
SHORT_NAMES = {"knowledge": "Know", "reasoning": "Reas", "chat": "Chat", "math": "Math", "code": "Code",
               "tool_use": "Tool", "safety": "Safety"}
_RESERVED = {"id", "category", "benchmark", "verifier", "messages", "prompt", "metrics"}
# what each verifier's mean is called in tables (the official name where it is a benchmark's metric)
METRIC_NAMES = {"code_pass": "pass@1", "code_tests": "assert pass rate (partial credit)",
                "tool_call": "AST accuracy", "instruction_strict": "prompt-level strict",
                "instruction_loose": "prompt-level loose", "instruction": "instruction-level share",
                "math_answer": "exact answer", "exact_match": "exact match", "safety": "refusal/compliance mean"}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021) from n samples with c correct.

    >>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 5), round(pass_at_k(4, 1, 2), 3)
    (0.0, 1.0, 0.5)
    """
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def score_items(items: list[dict], completions: list[list[str]], pass_k: tuple[int, ...] = (1, 10, 100)
                ) -> list[dict]:
    """Score every sample of every item with its verifier (and the extra `metrics` it lists); one row per item,
    with unbiased pass@k for each k its sample count allows."""
    sample_scores = _run_verifiers(items, completions, [it["verifier"] for it in items])
    extra: list[dict[str, float | None]] = [{} for _ in items]
    for metric in sorted({m for it in items for m in it.get("metrics", [])}):
        chosen = [i for i, it in enumerate(items) if metric in it.get("metrics", [])]
        scores = _run_verifiers([items[i] for i in chosen], [completions[i] for i in chosen], [metric] * len(chosen))
        for i, per_sample in zip(chosen, scores):
            valid = [s for s in per_sample if s is not None]
            extra[i][metric] = sum(valid) / len(valid) if valid else None
    rows = []
    for item, texts, scores, metrics in zip(items, completions, sample_scores, extra):
        valid = [s for s in scores if s is not None]
        row = {"id": item["id"], "category": item["category"], "benchmark": item["benchmark"],
               "verifier": item["verifier"], "completions": texts, "sample_scores": scores,
               "score": sum(valid) / len(valid) if valid else None, **({"metrics": metrics} if metrics else {})}
        if item["verifier"] == "safety":
            row["harmful"] = bool(item.get("harmful"))
        if "subset" in item:  # a benchmark's own categories (BFCL's), reported beside its score
            row["subset"] = item["subset"]
        if valid and (len(texts) > 1 or item["verifier"] == "code_pass"):  # pass@1 = the score, one definition
            correct = sum(1 for s in valid if s >= 0.999)
            row["pass_at_k"] = {k: pass_at_k(len(valid), correct, k) for k in pass_k if k <= len(valid)}
        rows.append(row)
    return rows


def _run_verifiers(items: list[dict], completions: list[list[str]], verifiers: list[str]) -> list[list]:
    """Per item, per sample: the score of the named verifier (items grouped so each verifier runs once)."""
    from barkit.eval.verifiers import get_verifier

    by_verifier: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(verifiers):
        by_verifier[name].append(i)
    sample_scores: list[list[float | None]] = [[] for _ in items]
    for name, idx in by_verifier.items():
        fn = get_verifier(name)
        flat = [(i, text) for i in idx for text in completions[i]]
        columns = defaultdict(list)
        for i, _ in flat:
            for key, value in items[i].items():
                if key not in _RESERVED:
                    columns[key].append(value)
        # every column must align with completions: fill absent optional columns with None
        for key in columns:
            if len(columns[key]) != len(flat):
                columns[key] = [items[i].get(key) for i, _ in flat]
        scores = fn([text for _, text in flat], **columns)
        for (i, _), s in zip(flat, scores):
            sample_scores[i].append(s)
    return sample_scores


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean of `values` (sample standard deviation over sqrt(n)); None below 2 values.

    >>> round(standard_error([1.0, 0.0, 1.0, 0.0]), 4)
    0.2887
    """
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _mean_se(parts: list[float | None]) -> float | None:
    """Standard error of a mean of independent estimates with these standard errors."""
    if not parts or any(p is None for p in parts):
        return None
    return sqrt(sum(p * p for p in parts)) / len(parts)


def benchmark_score_se(rows: list[dict]) -> tuple[float | None, float | None]:
    """(score, standard error) on a 0-1 scale; safety's is the mean of refusal and compliance rates."""
    scored = [r for r in rows if r["score"] is not None]
    if scored and "harmful" in scored[0]:
        groups = [[r["score"] for r in scored if r["harmful"] is h] for h in (True, False)]
        groups = [g for g in groups if g]
        return _mean([_mean(g) for g in groups]), _mean_se([standard_error(g) for g in groups])
    values = [r["score"] for r in scored]
    return _mean(values), standard_error(values)


def aggregate(rows: list[dict]) -> dict:
    """{'benchmarks': {name: {...}}, 'categories': {cat: score}, 'overall': score} on a 0-100 scale."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["benchmark"]].append(r)
    benchmarks = {}
    for name, group in sorted(groups.items()):
        score, se = benchmark_score_se(group)
        entry = {"category": group[0]["category"], "metric": METRIC_NAMES.get(group[0].get("verifier"), ""),
                 "n": len(group), "scored": sum(r["score"] is not None for r in group),
                 "score": None if score is None else 100 * score, "se": None if se is None else 100 * se}
        extra_names = sorted({m for r in group for m in r.get("metrics", {})})
        if extra_names:
            entry["metrics"] = {METRIC_NAMES.get(m, m): _percent([r["metrics"][m] for r in group
                                                                  if r.get("metrics", {}).get(m) is not None])
                                for m in extra_names}
        subsets = sorted({r["subset"] for r in group if "subset" in r}, key=[r.get("subset") for r in group].index)
        if len(subsets) > 1:
            entry["subsets"] = {sub: _percent([r["score"] for r in group if r.get("subset") == sub
                                               and r["score"] is not None]) for sub in subsets}
        if "harmful" in group[0]:
            entry["refusal_rate"] = _percent([r["score"] for r in group if r["harmful"] and r["score"] is not None])
            entry["compliance_rate"] = _percent([r["score"] for r in group
                                                 if not r["harmful"] and r["score"] is not None])
        scored_rows = [r for r in group if r["score"] is not None]
        ks = sorted({k for r in group for k in r.get("pass_at_k", {})})
        for k in ks:  # only where every scored item has k samples: a mean over a subset would be another number
            if scored_rows and all(k in r.get("pass_at_k", {}) for r in scored_rows):
                entry[f"pass@{k}"] = _percent([r["pass_at_k"][k] for r in scored_rows])
        benchmarks[name] = entry
    categories, category_se, category_n = {}, {}, {}
    for cat in CATEGORIES + tuple(sorted({b["category"] for b in benchmarks.values()} - set(CATEGORIES))):
        members = [b for b in benchmarks.values() if b["category"] == cat and b["score"] is not None]
        if members:
            categories[cat] = sum(b["score"] for b in members) / len(members)
            category_se[cat] = _mean_se([b.get("se") for b in members])
            category_n[cat] = sum(b["scored"] for b in members)
    overall = _mean(list(categories.values()))
    return {"benchmarks": benchmarks, "categories": categories, "overall": overall, "category_se": category_se,
            "category_n": category_n, "overall_se": _mean_se(list(category_se.values()))}


def _percent(values: list[float]) -> float | None:
    m = _mean(values)
    return None if m is None else 100 * m
