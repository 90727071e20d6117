"""The toy-world generator: determinism, file contents, held-out splits and correctness of the targets."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from barkit.errors import BarkitError
from barkit.eval.verifiers import get_verifier
from barkit.toy.world import GENERATOR_VERSION, PROFILES, general, generate_world
from barkit.toy.world.coding import OPS, Func
from barkit.toy.world.entities import build_world
from barkit.toy.world.generate import build_files
from barkit.toy.world.safety import REFUSALS

QUICK = PROFILES["quick"]
TRAIN_FILES = ("pretrain.jsonl", "general_sft.jsonl", "math_midtrain.jsonl", "code_midtrain.jsonl",
               "math_sft.jsonl", "code_sft.jsonl", "tool_use_sft.jsonl", "safety_sft.jsonl", "math_rl.jsonl",
               "code_rl.jsonl")
CATEGORIES = ("knowledge", "reasoning", "chat", "math", "code", "tool_use", "safety")
EXPECTED_ROWS = {
    # quick: 4x the math rows (math_rows_scale), so its expert cannot just memorise its problems
    "pretrain.jsonl": 4000, "general_sft.jsonl": 990, "math_midtrain.jsonl": 4000, "code_midtrain.jsonl": 1000,
    "math_sft.jsonl": 1600, "code_sft.jsonl": 400, "tool_use_sft.jsonl": 400, "safety_sft.jsonl": 400,
    "math_rl.jsonl": 200, "code_rl.jsonl": 200, **{f"eval/{c}.jsonl": 80 for c in CATEGORIES},
    "eval/knowledge.jsonl": 48,  # 16 held-out people x 3 relations
}
VERIFIER_COLUMNS = {
    "knowledge": ("exact_match", {"answer"}), "reasoning": ("exact_match", {"answer"}),
    "chat": ("instruction", {"constraints"}), "math": ("math_answer", {"answer"}),
    "code": ("code_tests", {"tests", "entry_point", "prompt_prefix"}),
    "tool_use": ("tool_call", {"tools", "ground_truth"}), "safety": ("safety", {"harmful"}),
}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("worlds")
    start = time.perf_counter()
    generate_world(root / "a", "quick", 0)
    elapsed = time.perf_counter() - start
    generate_world(root / "b", "quick", 0)
    generate_world(root / "c", "quick", 1)
    return {"a": root / "a", "b": root / "b", "c": root / "c", "seconds": elapsed}


def user_texts(rows: list[dict]) -> list[str]:
    return [m["content"] for r in rows for m in (r.get("messages") or r.get("prompt") or []) if m["role"] == "user"]


def test_quick_profile_is_fast(worlds: dict) -> None:
    assert worlds["seconds"] < 5.0


def test_same_seed_gives_byte_identical_files(worlds: dict) -> None:
    names = sorted(p.relative_to(worlds["a"]).as_posix() for p in worlds["a"].rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(worlds["b"]).as_posix() for p in worlds["b"].rglob("*") if p.is_file())
    for name in names:
        assert (worlds["a"] / name).read_bytes() == (worlds["b"] / name).read_bytes(), name


def test_files_and_row_counts(worlds: dict) -> None:
    files = sorted(p.relative_to(worlds["a"]).as_posix() for p in worlds["a"].rglob("*.jsonl"))
    assert files == sorted(EXPECTED_ROWS)
    for name, rows in EXPECTED_ROWS.items():
        assert len(read(worlds["a"] / name)) == rows, name


def test_manifest_and_summary_describe_the_files(tmp_path: Path, worlds: dict) -> None:
    summary = generate_world(tmp_path / "w", "quick", 0)
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["files"] == summary
    assert (manifest["profile"], manifest["seed"], manifest["generator_version"]) == ("quick", 0, GENERATOR_VERSION)
    assert manifest["profile_params"]["eval_items"] == 80
    assert summary == json.loads((worlds["a"] / "manifest.json").read_text())["files"]
    assert {name: s["rows"] for name, s in summary.items()} == EXPECTED_ROWS
    assert not [p for p in tmp_path.iterdir() if p.name != "w"], "temp dirs left behind"


def test_other_seed_changes_eval_not_counts(worlds: dict) -> None:
    for c in CATEGORIES:
        a, b = read(worlds["a"] / f"eval/{c}.jsonl"), read(worlds["c"] / f"eval/{c}.jsonl")
        assert len(a) == len(b) == EXPECTED_ROWS[f"eval/{c}.jsonl"]
        assert user_texts(a) != user_texts(b), c


def test_general_sft_has_three_even_categories_a_copy_task_and_no_domain_data(worlds: dict) -> None:
    rows = read(worlds["a"] / "general_sft.jsonl")
    assert sorted({r["category"] for r in rows}) == ["chat", "copy", "knowledge", "reasoning"]
    assert [sum(r["category"] == c for r in rows) for c in ("chat", "knowledge", "reasoning")] == [300, 300, 300]
    for row in rows:
        if row["category"] == "copy":  # the answer is the prompt's list, verbatim
            prompt, answer = (m["content"] for m in row["messages"])
            assert prompt.endswith(answer)
    text = json.dumps(rows)
    for marker in ("<tool_call>", "def ", " + ", " - ", *REFUSALS):
        assert marker not in text, marker
    assert not re.search(r"\d+ [-+*] \d+", text)  # no arithmetic


def test_no_eval_prompt_appears_in_training(worlds: dict) -> None:
    train_users, train_texts = set(), []
    for name in TRAIN_FILES:
        rows = read(worlds["a"] / name)
        train_users.update(user_texts(rows))
        train_texts += [r["text"] for r in rows if "text" in r]
    corpus = "\n".join(train_texts)
    for c in CATEGORIES:
        for prompt in user_texts(read(worlds["a"] / f"eval/{c}.jsonl")):
            assert prompt not in train_users, prompt
            assert prompt not in corpus, prompt


def test_eval_prompts_are_distinct(worlds: dict) -> None:
    for c in CATEGORIES:
        prompts = user_texts(read(worlds["a"] / f"eval/{c}.jsonl"))
        assert len(set(prompts)) == len(prompts), c


def _mentions(name: str, text: str) -> bool:
    return re.search(rf"\b{name}\b", text) is not None


def test_heldout_people_only_in_prose(worlds: dict) -> None:
    world = build_world(QUICK, 0)
    assert len(world.heldout_people) == 16
    chat_text = "\n".join(json.dumps(read(worlds["a"] / n)) for n in TRAIN_FILES if "midtrain" not in n
                          and n != "pretrain.jsonl")
    pretrain = [r["text"] for r in read(worlds["a"] / "pretrain.jsonl")]
    qa_text = "\n".join(t for t in pretrain if t.startswith("Question:"))
    prose = [t for t in pretrain if not t.startswith("Question:")]
    for person in world.heldout_people:
        assert not _mentions(person.name, chat_text), person.name
        assert not _mentions(person.name, qa_text), person.name
        about = [t for t in prose if _mentions(person.name, t)]
        assert len(about) >= 20, person.name  # several paraphrases of each fact
        for value in (person.city, person.job, person.org):
            assert any(_mentions(value, t) for t in about), (person.name, value)


def test_knowledge_eval_asks_heldout_facts(worlds: dict) -> None:
    world = build_world(QUICK, 0)
    people = {p.name: p for p in world.heldout_people}
    for item in read(worlds["a"] / "eval/knowledge.jsonl"):
        name = next(n for n in people if _mentions(n, item["messages"][0]["content"]))
        p = people[name]
        assert item["answer"] in (p.city, p.job, p.org)


def test_entity_names_are_not_words_of_the_corpus(worlds: dict) -> None:
    words: set[str] = set()
    for name in TRAIN_FILES:
        for line in (worlds["a"] / name).read_text().splitlines():
            if "lowercase letters" not in line:  # those answers lowercase the names on purpose
                words.update(re.findall(r"\b[a-z]+\b", line))
    names = {n.lower() for n in build_world(QUICK, 0).all_names()}
    assert not names & words


def test_eval_items_have_their_verifier_columns(worlds: dict) -> None:
    for c in CATEGORIES:
        verifier, columns = VERIFIER_COLUMNS[c]
        for i, item in enumerate(read(worlds["a"] / f"eval/{c}.jsonl")):
            assert item["id"] == f"{c}-{i:04d}"
            assert (item["category"], item["verifier"]) == (c, verifier)
            assert item["benchmark"].startswith("toy_")
            assert columns <= set(item), (c, set(item))
            assert [m["role"] for m in item["messages"]] == ["user"]
            assert "reference" not in item


def test_every_eval_item_is_solved_by_its_reference() -> None:
    """The reference completions (the training targets' style) score 1.0 under the shared verifiers."""
    files = build_files(QUICK, 0)
    for c in CATEGORIES:
        items = files[f"eval/{c}.jsonl"][: 16 if c == "code" else None]  # code runs in a sandbox: keep it short
        columns = {k: [item.get(k) for item in items] for k in set().union(*items) - {"reference"}}
        scores = get_verifier(items[0]["verifier"])([item["reference"] for item in items], **columns)
        assert scores == [1.0] * len(items), c


def test_rl_rows_have_their_verifier_columns(worlds: dict) -> None:
    for row in read(worlds["a"] / "math_rl.jsonl"):
        assert set(row) == {"prompt", "verifier", "answer"} and row["verifier"] == "math_answer"
    for row in read(worlds["a"] / "code_rl.jsonl"):
        assert set(row) == {"prompt", "verifier", "tests", "entry_point", "prompt_prefix"}


def _solve(problem: str) -> int:
    a, b = map(int, re.findall(r"\d+", problem))
    return a + b if re.search(r"more", problem) else a - b


def test_math_answers_are_correct(worlds: dict) -> None:
    for item in read(worlds["a"] / "eval/math.jsonl") + [
        {"messages": r["prompt"], "answer": r["answer"]} for r in read(worlds["a"] / "math_rl.jsonl")
    ]:
        assert item["answer"] == str(_solve(item["messages"][0]["content"]))
    for row in read(worlds["a"] / "math_sft.jsonl"):
        problem, answer = (m["content"] for m in row["messages"])
        value = _solve(problem)
        a, b = re.findall(r"\d+", problem)
        op = "+" if "more" in problem else "-"
        assert answer == f"{a}{op}{b}={value}. The answer is {value}."  # quick: the compact notation
    for item in read(worlds["a"] / "eval/math.jsonl"):
        a, b = map(int, re.findall(r"\d+", item["messages"][0]["content"]))
        assert 10 <= a <= 99 and 1 <= b <= 9  # quick: 2-digit +/- 1-digit


def test_reference_code_passes_its_tests() -> None:
    for op in OPS:
        f = Func(op, "kelo", 4)
        scope: dict = {}
        exec(f.source() + "\n" + f.tests(), scope)
        scope["check"](scope[f.name])


def test_code_items_run(worlds: dict) -> None:
    for item in read(worlds["a"] / "eval/code.jsonl") + read(worlds["a"] / "code_rl.jsonl"):
        scope: dict = {}
        exec(item["prompt_prefix"] + "\n" + item["tests"], scope)  # prefix and tests are valid Python
        assert item["entry_point"] in json.dumps(item.get("messages") or item["prompt"])
        with pytest.raises(AssertionError):
            scope["check"](lambda *args: object())  # the tests do test something


def test_tool_items_are_consistent(worlds: dict) -> None:
    kinds = {"single": 0, "parallel": 0, "none": 0}
    for item in read(worlds["a"] / "eval/tool_use.jsonl"):
        offered = {t["name"]: t for t in item["tools"]}
        assert 2 <= len(offered) <= 4
        kinds[{0: "none", 1: "single", 2: "parallel"}[len(item["ground_truth"])]] += 1
        for call in item["ground_truth"]:
            (name, args), = call.items()
            assert set(args) == set(offered[name]["parameters"]["properties"])
            assert all(isinstance(v, list) and len(v) == 1 for v in args.values())
    assert min(kinds.values()) >= 4 and kinds["single"] > kinds["parallel"] + kinds["none"]
    for row in read(worlds["a"] / "tool_use_sft.jsonl"):
        answer = row["messages"][1]["content"]
        for block in re.findall(r"<tool_call>(.*?)</tool_call>", answer):
            call = json.loads(block)
            assert call["name"] in {t["name"] for t in row["tools"]}


def test_safety_eval_is_half_harmful_and_sft_refuses_exactly_harmful(worlds: dict) -> None:
    items = read(worlds["a"] / "eval/safety.jsonl")
    assert sum(i["harmful"] for i in items) == len(items) // 2 == 40
    answers = [r["messages"][1]["content"] for r in read(worlds["a"] / "safety_sft.jsonl")]
    refusals = sum(a in REFUSALS for a in answers)
    assert 120 < refusals < 280
    assert all(a in REFUSALS or a.startswith("Sure! ") for a in answers)


def _satisfies(constraint: dict, text: str) -> bool:
    """A minimal IFEval-style checker, so the test validates the SFT targets independently."""
    kind, kw = constraint["type"], constraint["kwargs"]
    if kind == "change_case:english_capital":
        return text.isupper()
    if kind == "change_case:english_lowercase":
        return text.islower()
    if kind == "length_constraints:number_words":
        n = len(re.findall(r"\w+", text))
        return n < kw["num_words"] if kw["relation"] == "less than" else n >= kw["num_words"]
    if kind == "keywords:existence":
        return all(re.search(rf"\b{k}\b", text, re.I) for k in kw["keywords"])
    if kind == "keywords:forbidden_words":
        return not any(re.search(rf"\b{k}\b", text, re.I) for k in kw["forbidden_words"])
    if kind == "detectable_format:number_bullet_lists":
        return len(re.findall(r"^\s*\*[^\*].*$", text, re.M)) == kw["num_bullets"]
    if kind == "detectable_format:json_format":
        return isinstance(json.loads(text), dict)
    if kind == "startend:end_checker":
        return text.strip().lower().endswith(kw["end_phrase"].lower())
    raise AssertionError(kind)


def test_instruction_targets_satisfy_their_constraints() -> None:
    world = build_world(QUICK, 0)
    rng = random.Random(0)
    seen = set()
    for _ in range(400):
        prompt, answer, cols = general._instruction(world, world.train_people, rng)
        (constraint,) = cols["constraints"]
        seen.add(constraint["type"])
        assert _satisfies(constraint, answer), (prompt, answer)
    assert len(seen) == 8


def _solve_reasoning(prompt: str) -> str:
    """An independent solver for the three reasoning templates."""
    if prompt.endswith("pet?"):
        who = re.search(r"What color is (\w+)'s pet\?", prompt).group(1)
        pet = re.search(rf"\b{who} has a (\w+)\.", prompt).group(1)
        return re.search(rf"The {pet} is (\w+)\.", prompt).group(1)
    if prompt.startswith("Where") or "Where is" in prompt:
        who, thing = re.search(r"Where is (\w+)'s (\w+)\?", prompt).groups()
        color = re.search(rf"\b{who}'s {thing} is in the (\w+) box\.", prompt).group(1)
        return re.search(rf"The {color} box is in the (\w+)\.", prompt).group(1)
    pairs = re.findall(r"(\w+) is \w+ than (\w+)\.", prompt)
    x, y = re.search(r"Is (\w+) \w+ than (\w+)\?", prompt).groups()
    below = dict(pairs)  # who each person directly beats
    while x in below:
        x = below[x]
        if x == y:
            return "yes"
    return "no"


def test_reasoning_answers_follow_from_the_prompt() -> None:
    world = build_world(QUICK, 0)
    rng = random.Random(0)
    answers = []
    for _ in range(300):
        prompt, answer, cols = general._reasoning(world, "train", rng)
        assert cols == {"answer": answer} and _solve_reasoning(prompt) == answer, prompt
        answers.append(answer)
    assert {"yes", "no", "kitchen", "red"} <= set(answers)


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(BarkitError, match="huge"):
        generate_world(tmp_path / "w", "huge", 0)
    with pytest.raises(BarkitError, match="seed"):
        generate_world(tmp_path / "w", "quick", "0")  # type: ignore[arg-type]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(BarkitError, match="refusing"):
        generate_world(tmp_path / "mine", "quick", 0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_regenerating_replaces_a_generated_dir(tmp_path: Path) -> None:
    generate_world(tmp_path / "w", "quick", 1)
    (tmp_path / "w" / "stale.jsonl").write_text("{}\n")
    generate_world(tmp_path / "w", "quick", 0)
    assert not (tmp_path / "w" / "stale.jsonl").exists()
    assert json.loads((tmp_path / "w" / "manifest.json").read_text())["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
