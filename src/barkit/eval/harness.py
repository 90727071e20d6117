"""`barkit eval` / `barkit score`: generate, verify, aggregate, and write results.json, table.md and plots."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from barkit.checkpoint import read_manifest, write_json
from barkit.config import to_dict
from barkit.errors import BarkitError
from barkit.eval.generation import GenerationSettings, HFBackend, make_backend
from barkit.eval.report import benchmark_table, markdown_table, plot_categories, plot_routing
from barkit.eval.scoring import CATEGORIES, aggregate, score_items

REAL_SUITES = ("humaneval", "bfcl", "ifbench")  # packaged benchmarks (barkit.eval.benchmarks)


@dataclass
class EvalConfig:
    model: str | None = field(default=None, metadata={"help": "checkpoint directory to evaluate"})
    suite: str = field(default="toy", metadata={"help": "toy | humaneval | bfcl | ifbench | FILE.jsonl"})
    world: str | None = field(default=None, metadata={"help": "toy world directory (for --suite toy)"})
    categories: list[str] | None = field(default=None, metadata={"help": "comma-separated categories"})
    limit: int | None = field(default=None, metadata={"help": "at most this many items per benchmark"})
    out: str | None = field(default=None, metadata={"help": "output directory (default MODEL/eval-SUITE)"})
    engine: Literal["hf", "vllm"] = field(default="hf", metadata={
        "help": "generation engine: hf (transformers generate) or vllm (the vllm extra)"})
    device: str = field(default="auto", metadata={"help": "auto (the GPU when present, else the CPU), cpu, cuda..."})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU, fp32 on the CPU), float32, bfloat16"})
    max_new_tokens: int = 96
    temperature: float = 0.0
    num_samples: int = 1
    pass_k: list[int] = field(default_factory=lambda: [1])
    extract_code: bool = field(default=False, metadata={
        "help": "score the first fenced code block of each completion (HumanEval's official harness runs the "
                "prompt + the completion as written; this deviation is named in the table)"})
    batch_size: int = 32
    seed: int = 0
    routing: bool = field(default=True, metadata={"help": "record routing shares per category (MoE models)"})
    compare: list[str] | None = field(default=None, metadata={"help": "render several results side by side"})
    name: str | None = field(default=None, metadata={"help": "model name in tables"})

    def validate(self) -> None:
        if self.compare is None and not self.model:
            raise BarkitError("config key 'model': a checkpoint to evaluate is required (or --compare A,B,...)")
        for cat in self.categories or []:
            if cat not in CATEGORIES:
                raise BarkitError(f"config key 'categories': unknown category '{cat}' (known: {', '.join(CATEGORIES)})")
        if self.num_samples < 1 or any(k < 1 or k > self.num_samples for k in self.pass_k):
            raise BarkitError("config key 'pass_k': each k must be between 1 and num_samples")
        if self.suite == "toy" and self.compare is None and not self.world:
            raise BarkitError("config key 'world': --suite toy needs the toy world directory (barkit world build)")

    def settings(self) -> GenerationSettings:
        return GenerationSettings(self.max_new_tokens, self.temperature, 1.0, self.num_samples, self.batch_size,
                                  self.seed)


def load_suite(suite: str, world: str | None, categories: list[str] | None = None,
               limit: int | None = None) -> list[dict]:
    from barkit.eval import benchmarks

    if suite == "toy":
        eval_dir = Path(world or "") / "data" / "eval"
        if not eval_dir.is_dir():
            raise BarkitError(f"{eval_dir}: no toy evaluation suite here (run `barkit world build` first)")
        items = [it for path in sorted(eval_dir.glob("*.jsonl")) for it in benchmarks.load_items(path)]
    elif suite in REAL_SUITES:
        items = benchmarks.load_benchmark(suite)
    elif suite.endswith(".jsonl"):
        items = benchmarks.load_items(Path(suite))
    else:
        raise BarkitError(f"unknown suite '{suite}' (known: toy, {', '.join(REAL_SUITES)}, or a .jsonl file)")
    if categories:
        items = [it for it in items if it["category"] in categories]
    if limit is not None:
        items = limit_items(items, limit)
    if not items:
        raise BarkitError(f"suite '{suite}': no evaluation items selected")
    return items


def limit_items(items: list[dict], limit: int) -> list[dict]:
    """At most `limit` items per benchmark, in file order, taken in turn from its harmful and benign prompts
    where it has both (XSTest's kind): a plain prefix could hold only one kind, leaving one rate unscored.

    >>> rows = [{"benchmark": "b", "harmful": h, "i": i} for i, h in enumerate([True, True, True, False, False])]
    >>> [r["i"] for r in limit_items(rows, 2)]
    [0, 3]
    """
    groups: dict[str, dict[object, list[int]]] = {}
    for index, it in enumerate(items):
        groups.setdefault(it["benchmark"], {}).setdefault(it.get("harmful"), []).append(index)
    kept: list[int] = []
    for by_kind in groups.values():
        in_turn = [i for turn in itertools.zip_longest(*by_kind.values()) for i in turn if i is not None]
        kept += in_turn[:limit]
    return [items[i] for i in sorted(kept)]


@torch.no_grad()
def routing_by_category(backend: HFBackend, items: list[dict], batch_size: int = 32) -> dict | None:
    """Mean routing weight per expert on each category's prompts (which expert handles which domain)."""
    from barkit.attribution import expert_names, is_moe, routing_weights_per_sequence
    from barkit.eval.generation import render_prompt

    model, tok = backend.model, backend.tokenizer
    if not is_moe(model):
        return None
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        enc = tok([render_prompt(tok, it["messages"], it.get("tools")) for it in batch], return_tensors="pt",
                  padding=True, add_special_tokens=False).to(model.device)
        w_BLE = routing_weights_per_sequence(model, enc["input_ids"], enc["attention_mask"]).float().cpu()
        for it, w_LE in zip(batch, w_BLE):
            sums[it["category"]] = sums.get(it["category"], 0) + w_LE.mean(0)
            counts[it["category"]] = counts.get(it["category"], 0) + 1
    return {"experts": expert_names(model),
            "shares": {c: (sums[c] / counts[c]).tolist() for c in sums}}


def _placement(backend, cfg: EvalConfig) -> dict:
    """Where the model ran, for the results: the HF model's own device and dtype, or what vLLM was asked for."""
    model = getattr(backend, "model", None)
    if model is not None:
        return {"engine": cfg.engine, "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}
    return {"engine": cfg.engine, "device": "vllm", "dtype": cfg.dtype}


def write_report(out: Path, name: str, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    (out / "table.md").write_text(markdown_table({name: results}) + "\n" + benchmark_table(results))
    plot_categories({name: results}, out / "categories.png", title=f"{name}: scores per category")
    if results.get("routing"):
        plot_routing(results["routing"]["shares"], results["routing"]["experts"], out / "routing.png",
                     title=f"{name}: routing share per category")


def evaluate(cfg: EvalConfig, backend=None, show_progress: bool = True) -> dict:
    """Evaluate one model on a suite; write results.json, table.md and PNGs; return the results dict."""
    items = load_suite(cfg.suite, cfg.world, cfg.categories, cfg.limit)
    owned = backend is None
    backend = backend or make_backend(cfg.engine, cfg.model, cfg.dtype, cfg.device)
    if hasattr(backend, "show_progress"):
        backend.show_progress = show_progress
    start = time.perf_counter()
    try:
        completions = backend.generate([it["messages"] for it in items], [it.get("tools") for it in items],
                                       cfg.settings())
    finally:
        if owned and hasattr(backend, "close"):
            backend.close()  # a vLLM engine holds a process and its memory
    gen_s = time.perf_counter() - start
    rows = score_items(with_code_extraction(items, cfg.extract_code), completions, tuple(cfg.pass_k))
    results = {"model": cfg.model, "name": cfg.name or Path(cfg.model).name, "suite": cfg.suite,
               **aggregate(rows), "items": rows, "config": to_dict(cfg), "extract_code": cfg.extract_code,
               "model_manifest": read_manifest(cfg.model),
               "timing": {"generation_s": gen_s, "items": len(items), "items_per_s": len(items) / max(gen_s, 1e-9),
                          "tokens": getattr(backend, "generated_tokens", None),
                          "tokens_per_s": getattr(backend, "generated_tokens", 0) / max(gen_s, 1e-9),
                          "scoring_s": time.perf_counter() - start - gen_s},
               "placement": _placement(backend, cfg)}
    if cfg.routing and isinstance(backend, HFBackend):
        results["routing"] = routing_by_category(backend, items, cfg.batch_size)
    out = Path(cfg.out) if cfg.out else Path(cfg.model) / f"eval-{Path(cfg.suite).stem}"
    write_report(out, results["name"], results)
    return results


def load_results(path: str) -> dict:
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    if not p.is_file():
        raise BarkitError(f"{p}: no results.json (run `barkit eval` first)")
    return json.loads(p.read_text())


def compare(paths: list[str], out: Path) -> str:
    """Render several results side by side: table.md and a grouped bar plot."""
    results = {}
    for path in paths:
        res = load_results(path)
        name = res.get("name") or Path(path).name
        if name in results:  # two runs of the same model: tell them apart by where they live
            name = f"{name} ({Path(path).name})"
        results[name] = res
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results)
    (out / "comparison.md").write_text(table)
    plot_categories(results, out / "comparison.png", title="Scores per category")
    return table


def with_code_extraction(items: list[dict], extract: bool) -> list[dict]:
    """Items whose `code_pass` verdict takes each completion's first fenced block (`--extract-code`)."""
    return [{**it, "extract_code": True} if extract and it["verifier"] == "code_pass" else it for it in items]


def score_file(suite: str, completions_path: Path, world: str | None, out: Path, extract_code: bool = False) -> dict:
    """Score completions produced elsewhere: JSONL with `id` and `completion` (or `completions`)."""
    items = {it["id"]: it for it in load_suite(suite, world)}
    chosen, texts = [], []
    for lineno, line in enumerate(Path(completions_path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BarkitError(f"{completions_path}:{lineno}: not valid JSON") from None
        if row.get("id") not in items:
            raise BarkitError(f"{completions_path}:{lineno}: unknown item id {row.get('id')!r} for suite '{suite}'")
        value = row.get("completions", row.get("completion"))
        if value is None:
            raise BarkitError(f"{completions_path}:{lineno}: no 'completion' column")
        chosen.append(items[row["id"]])
        texts.append(value if isinstance(value, list) else [value])
    if not chosen:
        raise BarkitError(f"{completions_path}: no completions")
    rows = score_items(with_code_extraction(chosen, extract_code), texts)
    results = {"model": str(completions_path), "name": Path(completions_path).stem, "suite": suite,
               **aggregate(rows), "items": rows, "extract_code": extract_code}
    write_report(out, results["name"], results)
    return results
