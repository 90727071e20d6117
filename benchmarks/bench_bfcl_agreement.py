"""BFCL: barkit's `tool_call` verdicts next to the official checker's, on the same completions, per category and
per kind of completion.

    python benchmarks/bench_bfcl_agreement.py --official-python VENV/bin/python [--completions FILE.jsonl]

VENV: an environment with the official package (`python -m venv bfcl && bfcl/bin/pip install bfcl-eval==2026.3.23
soundfile`). Its checker runs there, in a subprocess: BFCL's Qwen FC handler decodes each completion (the
`<tool_call>` format barkit documents) and its runner's AST and relevance entry points judge it, as
`bfcl evaluate` does for that handler. FILE: JSONL with `id` (a BFCL id) and `completion`; without it the
script writes its own sets over every item of the 11 single-turn Python categories (~3,500 items): the ground
truth itself, in reverse order, with optional string arguments given as ".", ints and floats swapped, one block
malformed, blocks without the handler's newlines, arguments as a JSON string, a numeric name, bare JSON, an
unclosed last tag, after a reasoning block, a wrong value, one call too many, and prose. Prints agreement per
category and per set, and the first disagreements of each class.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from barkit.eval.benchmarks import load_benchmark
from barkit.eval.verifiers import tool_call

OFFICIAL = r'''
import json, sys, types
from bfcl_eval.constants.enums import Language, ReturnFormat
from bfcl_eval.eval_checker.eval_runner import _evaluate_single_ast_entry, _evaluate_single_relevance_entry
from bfcl_eval.model_handler.local_inference.qwen_fc import QwenFCHandler

handler = types.SimpleNamespace(_extract_tool_calls=QwenFCHandler._extract_tool_calls)
handler.decode_ast = lambda result, language=None, has_tool_call_tag=False: QwenFCHandler.decode_ast(
    handler, result, language, has_tool_call_tag)
MODEL = "Qwen_Qwen3-8B-FC"  # a local Qwen FC model: its tools keep their dotted names
for line in open(sys.argv[1]):
    row = json.loads(line)
    text = row["completion"]
    if "</think>" in text:  # what the handler stores as the model's response
        text = text.split("</think>")[-1].lstrip("\n")
    prompt = {"function": row["function"]}
    category = row["category"]
    try:
        if "relevance" in category:
            result = _evaluate_single_relevance_entry(handler, row["id"], text, prompt, MODEL, category)
        else:
            result = _evaluate_single_ast_entry(handler, row["id"], text, row["ground_truth"], prompt, MODEL,
                                                category, Language.PYTHON, ReturnFormat.PYTHON)
        print(json.dumps(bool(result["valid"])))
    except Exception as e:  # the official runner would stop here
        print(json.dumps("crash: %s: %s" % (type(e).__name__, e)))
'''

OFFICIAL_CATEGORY = {"simple": "simple_python"}


def first_values(entry: dict) -> dict:
    """One call from a ground-truth entry: the first allowed value of each argument that has one."""
    (name, allowed), = entry.items()
    return {"name": name, "arguments": {k: next(v for v in vals if v != "") for k, vals in allowed.items()
                                        if any(v != "" for v in vals)}}


def block(call: dict, newlines: bool = True) -> str:
    body = json.dumps(call)
    return f"<tool_call>\n{body}\n</tool_call>" if newlines else f"<tool_call>{body}</tool_call>"


def render(calls: list[dict]) -> str:
    return "\n".join(block(c) for c in calls)


def _optional_dot(item: dict, call: dict) -> dict:
    props = next((t.get("parameters", {}).get("properties", {}) for t in item["tools"] if t["name"] == call["name"]),
                 {})
    entry = next(e for e in item["ground_truth"] if call["name"] in e)[call["name"]]
    extra = {k: "." for k, vals in entry.items() if "" in vals and props.get(k, {}).get("type") == "string"}
    return {"name": call["name"], "arguments": {**call["arguments"], **extra}}


def _swap_numbers(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [_swap_numbers(v) for v in value]
    return value


def _wrong_value(call: dict) -> dict:
    args = dict(call["arguments"])
    for k, v in args.items():
        if isinstance(v, str):
            args[k] = v + " zzz"
            break
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            args[k] = v + 7
            break
    return {"name": call["name"], "arguments": args}


def completion_sets(item: dict) -> dict[str, str]:
    calls = [first_values(e) for e in item["ground_truth"]]
    if not calls:  # (ir)relevance: no ground truth; call the first tool with no arguments
        calls = [{"name": item["tools"][0]["name"] if item["tools"] else "search", "arguments": {}}]
    sets = {
        "ground truth": render(calls),
        "reversed order": render(calls[::-1]),
        "optional strings as '.'": render([_optional_dot(item, c) for c in calls]) if item["ground_truth"] else None,
        "ints and floats swapped": render([{"name": c["name"], "arguments": {k: _swap_numbers(v) for k, v in
                                                                            c["arguments"].items()}} for c in calls]),
        "one block malformed": render(calls) + "\n<tool_call>\n{\"name\": broken\n</tool_call>",
        "no newlines in tags": "".join(block(c, newlines=False) for c in calls),
        "arguments as a JSON string": render([{"name": c["name"], "arguments": json.dumps(c["arguments"])}
                                              for c in calls]),
        "numeric name": render([{"name": 5, "arguments": c["arguments"]} for c in calls]),
        "bare JSON": json.dumps(calls),
        "unclosed last tag": render(calls)[: -len("\n</tool_call>")],
        "after a reasoning block": "<think>\nThe user wants a call.\n</think>\n\n" + render(calls),
        "a wrong value": render([_wrong_value(calls[0]), *calls[1:]]),
        "one call too many": render(calls + calls[:1]),
        "prose": "I can't do that with the tools I have.",
    }
    return {k: v for k, v in sets.items() if v is not None}


def official_verdicts(python: str, rows: list[dict]) -> list:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    try:
        out = subprocess.run([python, "-c", OFFICIAL, f.name], capture_output=True, text=True, check=True).stdout
    finally:
        Path(f.name).unlink()
    return [json.loads(line) for line in out.splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-python", required=True, help="python of a venv with bfcl-eval installed")
    parser.add_argument("--completions", help="JSONL with id and completion (default: the generated sets)")
    parser.add_argument("--show", type=int, default=2, help="disagreements shown per class")
    args = parser.parse_args()
    items = {it["id"]: it for it in load_benchmark("bfcl")}
    cases = []  # (set name, item, completion)
    if args.completions:
        for line in open(args.completions, encoding="utf-8"):
            if line.strip():
                row = json.loads(line)
                cases.append(("file", items[row["id"]], row["completion"]))
    else:
        for item in items.values():
            cases += [(name, item, text) for name, text in completion_sets(item).items()]
    ours = tool_call([text for _, _, text in cases], ground_truth=[it["ground_truth"] for _, it, _ in cases],
                     tools=[it["tools"] for _, it, _ in cases], decoder=[it.get("decoder") for _, it, _ in cases],
                     expect=[it.get("expect") for _, it, _ in cases])
    rows = [{"id": it["id"], "category": OFFICIAL_CATEGORY.get(it["subset"], it["subset"]), "completion": text,
             "ground_truth": it["ground_truth"], "function": it["tools"]} for _, it, text in cases]
    theirs = official_verdicts(args.official_python, rows)
    by_set, by_cat, shown = defaultdict(Counter), defaultdict(Counter), Counter()
    for (name, item, text), mine, official in zip(cases, ours, theirs):
        agree = official == (mine == 1.0)
        for table, key in ((by_set, name), (by_cat, item["subset"])):
            table[key]["n"] += 1
            table[key]["agree"] += agree
            table[key]["barkit"] += mine == 1.0
            table[key]["official"] += official is True
        if not agree and shown[name] < args.show:
            shown[name] += 1
            print(f"DISAGREE [{name}] {item['id']}: barkit {mine}, official {official}\n  {text[:300]!r}")
    for title, table in (("category", by_cat), ("completion set", by_set)):
        print(f"\n| {title} | verdicts | agree | barkit passes | official passes |\n|---|---|---|---|---|")
        for key, c in table.items():
            print(f"| {key} | {c['n']} | {c['agree']} | {c['barkit']} | {c['official']} |")
    total = sum(c["n"] for c in by_set.values())
    agreed = sum(c["agree"] for c in by_set.values())
    print(f"\nagreement: {agreed}/{total} ({100 * agreed / total:.2f}%)")
    sys.exit(0)


if __name__ == "__main__":
    main()
