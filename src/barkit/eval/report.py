"""Reports shaped like the BAR model card: a Markdown table and PNG plots, for one model or several."""

from __future__ import annotations

from pathlib import Path

from barkit.eval.code_verdict import MEMORY_MB
from barkit.eval.scoring import CATEGORIES, METRIC_NAMES, SHORT_NAMES


def _cell(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if se is None else f"{value:.1f} ± {se:.1f}"


def _items(results: dict[str, dict], cat: str) -> str:
    counts = {r.get("category_n", {}).get(cat) for r in results.values()} - {None}
    return f" (n={counts.pop()})" if len(counts) == 1 else ""


def markdown_table(results: dict[str, dict], extra_columns: dict[str, dict[str, str]] | None = None) -> str:
    """One row per model: Overall then the seven categories (model-card order), each score with its standard
    error over the items, and each category's number of items in the header."""
    cats = [c for c in CATEGORIES if any(c in r["categories"] for r in results.values())]
    extra = extra_columns or {}
    extra_names = sorted({k for cols in extra.values() for k in cols})
    header = ["Model", "Overall", *[SHORT_NAMES[c] + _items(results, c) for c in cats], *extra_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, res in results.items():
        se = res.get("category_se", {})
        cells = [name, _cell(res.get("overall"), res.get("overall_se")),
                 *[_cell(res["categories"].get(c), se.get(c)) for c in cats],
                 *[extra.get(name, {}).get(k, "") for k in extra_names]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def benchmark_table(results: dict) -> str:
    """One row per benchmark: its metric by name, the score, how many items were scored (the rest could not
    be, e.g. an instruction with no checker: shown, never dropped) and any extra metrics."""
    lines = ["| Benchmark | Category | Metric | Score ± SE | Scored / items | Other metrics |",
             "|---|---|---|---|---|---|"]
    code = False
    for name, b in results.get("benchmarks", {}).items():
        passes = [f"{k} {_cell(b[k])}" for k in sorted((k for k in b if k.startswith("pass@") and k != "pass@1"),
                                                      key=lambda k: int(k[5:]))]
        others = ", ".join([*passes, *(f"{k} {_cell(v)}" for k, v in b.get("metrics", {}).items()),
                            *(f"{k} {_cell(v)}" for k, v in b.get("subsets", {}).items())])
        lines.append(f"| {name} | {b['category']} | {b.get('metric', '')} | {_cell(b.get('score'), b.get('se'))} | "
                     f"{b['scored']} / {b['n']} | {others} |")
        code |= b.get("metric") == METRIC_NAMES["code_pass"]
    if code:
        lines.append("\npass@k: " + ("the first fenced code block of each completion (`--extract-code`; not the "
                                      "official harness)" if results.get("extract_code") else
                                      "the prompt + each completion as written, 3 s per program (HumanEval's "
                                      "official harness)")
                     + f"; each program in a sandbox of {MEMORY_MB} MB (the official harness sets no memory cap)")
    return "\n".join(lines) + "\n"


def plot_categories(results: dict[str, dict], path: Path, title: str = "Scores per category") -> Path:
    """Grouped bars: categories on the x axis, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cats = [c for c in CATEGORIES if any(c in r["categories"] for r in results.values())] + ["overall"]
    names = list(results)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(cats) + 0.4 * len(names)), 4.5))
    x = np.arange(len(cats))
    for i, name in enumerate(names):
        res = results[name]
        values = [res["categories"].get(c, np.nan) if c != "overall" else (res.get("overall") or np.nan)
                  for c in cats]
        ses = res.get("category_se", {})
        errors = [(ses.get(c) if c != "overall" else res.get("overall_se")) or 0.0 for c in cats]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name, yerr=errors, capsize=2,
               error_kw={"elinewidth": 0.8})
    counts = {c: _items(results, c) for c in cats if c != "overall"}
    ax.set_xticks(x, [SHORT_NAMES.get(c, c.capitalize()) + counts.get(c, "").replace(" (", "\n(") for c in cats])
    ax.set_ylabel("score (0-100), bars: one standard error")
    ax.set_xlabel("category")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(3, len(names)), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_routing(shares: dict[str, list[float]], expert_names: list[str], path: Path,
                 title: str = "Routing share per category") -> Path:
    """Stacked bars: for each category, the mean routing weight each expert receives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cats = [c for c in CATEGORIES if c in shares] + [c for c in shares if c not in CATEGORIES]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cats)), 4.5))
    bottom = np.zeros(len(cats))
    for e, name in enumerate(expert_names):
        values = np.array([shares[c][e] for c in cats])
        ax.bar([SHORT_NAMES.get(c, c) for c in cats], values, bottom=bottom, label=name)
        bottom += values
    ax.set_ylabel("mean routing weight")
    ax.set_xlabel("evaluation category")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(title="expert", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
