"""The row formats of the field, mapped onto barkit's: chats and RLVR prompts (tables in docs/formats.md).

Chats: `messages` (Tulu 3 / OLMo SFT mixtures, OpenAI style), TRL's `prompt` + `completion` (each a string
or a list of messages), ShareGPT's `conversations` (`from`/`value`). RL prompts: barkit's own rows
(`prompt`, `verifier`, the verifier's columns) or open-instruct's RLVR rows (`messages`, `ground_truth`,
and `dataset` naming the checker), mapped onto barkit's verifiers by `OPEN_INSTRUCT_VERIFIERS`.
"""

from __future__ import annotations

import ast
import builtins
import json

from barkit.errors import BarkitError

_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                   "assistant": "assistant", "tool": "tool", "function_call": "assistant", "observation": "tool"}


def _as_messages(value, role: str) -> object:
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def _sharegpt(turns: list) -> object:
    if not all(isinstance(t, dict) and t.get("from") in _SHAREGPT_ROLES for t in turns):
        return None
    return [{"role": _SHAREGPT_ROLES[t["from"]], "content": t.get("value")} for t in turns]


def row_messages(row: dict) -> object:
    """A chat row's messages (validated by the caller); None when the row holds no chat barkit knows."""
    if "messages" in row:
        return row["messages"]
    if "prompt" in row and "completion" in row:
        prompt, completion = _as_messages(row["prompt"], "user"), _as_messages(row["completion"], "assistant")
        if isinstance(prompt, list) and isinstance(completion, list):
            return [*prompt, *completion]
    if isinstance(row.get("conversations"), list):
        return _sharegpt(row["conversations"])
    return None


def _literal(where: str, value: object) -> object:
    """open-instruct's ground truths are JSON or Python literals in strings (never code: no eval)."""
    if not isinstance(value, str):
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, SyntaxError, RecursionError):
            continue
    raise BarkitError(f"{where}: ground_truth is not a JSON or Python literal")


def _only(value: object) -> object:
    """A one-element list's element (open-instruct wraps single ground truths in lists)."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _math(where: str, truth: object) -> dict:
    return {"verifier": "math_answer", "answer": str(_only(truth))}


def _strict_math(where: str, truth: object) -> dict:
    return {"verifier": "math_final_answer", "answer": str(_only(truth))}


def _answer(verifier: str):
    def build(where: str, truth: object) -> dict:
        return {"verifier": verifier, "answer": str(_only(truth))}
    return build


def _if_function(where: str, value: dict) -> dict:
    from barkit.eval.if_functions import KNOWN

    if value["func_name"] not in KNOWN:
        raise BarkitError(f"{where}: ifeval ground_truth names func_name '{value['func_name']}', which barkit "
                          f"does not know (open-instruct's if_functions: {len(KNOWN)} names)")
    return {"verifier": "if_function", "constraint": value}


def _ifeval(where: str, truth: object) -> dict:
    """IFEval / IFBench constraints in either of open-instruct's formats: `[{"instruction_id": [...], "kwargs":
    [{...}, ...]}]` (IFEvalG) or `{"func_name": ..., **kwargs}` (its older if_functions)."""
    value = _only(_literal(where, _only(truth)))
    value = _literal(where, value) if isinstance(value, str) else value
    if isinstance(value, dict) and isinstance(value.get("func_name"), str):
        return _if_function(where, value)
    if not isinstance(value, dict) or not isinstance(value.get("instruction_id"), list):
        raise BarkitError(f"{where}: ifeval ground_truth needs 'instruction_id' (a list) and 'kwargs', "
                          f"or 'func_name'")
    kwargs = value.get("kwargs") or [{}] * len(value["instruction_id"])
    constraints = [{"type": name, "kwargs": {k: v for k, v in (kw or {}).items() if v is not None}}
                   for name, kw in zip(value["instruction_id"], kwargs)]
    return {"verifier": "instruction", "constraints": constraints}


def entry_point_of(tests: str) -> str | None:
    """The first non-builtin function the asserts call: the function under test.

    >>> entry_point_of("assert len(f(3)) == 1\\nassert f(0) == []")
    'f'
    """
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
            return node.func.id
    return None


def _code(where: str, truth: object) -> dict:
    """open-instruct's `code` rows: a list of assert statements on one function."""
    asserts = _literal(where, truth)
    asserts = [asserts] if isinstance(asserts, str) else asserts
    if not isinstance(asserts, list) or not asserts or not all(isinstance(a, str) for a in asserts):
        raise BarkitError(f"{where}: code ground_truth must be a list of assert statements")
    tests = "\n".join(asserts)
    entry = entry_point_of(tests)
    if entry is None:
        raise BarkitError(f"{where}: code ground_truth calls no function barkit can test")
    return {"verifier": "code_tests_reward", "tests": tests, "entry_point": entry}


# open-instruct's `dataset` value (its verifier's name, matched without case) -> barkit verifier row builder
OPEN_INSTRUCT_VERIFIERS = {
    "gsm8k": _math, "math": _math, "strict_math": _strict_math,
    "ifeval": _ifeval, "ifeval_g": _ifeval, "ifeval_old": _ifeval,
    "code": _code,
    "string_matcher": _answer("string_match"), "string_f1": _answer("string_f1"), "flan": _answer("flan_answer"),
}
# named by open-instruct, refused with the reason barkit cannot score them
UNSUPPORTED = {
    "code_stdio": "stdin/stdout tests need open-instruct's code API; barkit's sandbox runs assert tests",
    "max_length": "a length reward on token counts, not a verifier of the answer",
    "up_to_max_length": "a length reward on token counts, not a verifier of the answer",
    "re_search": "a search-agent reward (<finish> tags)", "re_search_f1": "a search-agent reward (<finish> tags)",
}


def is_open_instruct(row: dict) -> bool:
    return "prompt" not in row and {"messages", "ground_truth", "dataset"} <= set(row)


def from_open_instruct(where: str, row: dict) -> dict:
    """An open-instruct RLVR row (`messages`, `ground_truth`, `dataset`) as a barkit rl-prompt row."""
    dataset = row["dataset"]
    if isinstance(dataset, list) and len(dataset) > 1:
        raise BarkitError(f"{where}: a row with several verifiers ({', '.join(map(str, dataset))}) is not supported; "
                          f"give each verifier its own row")
    name = str(_only(dataset)).lower()
    build = OPEN_INSTRUCT_VERIFIERS.get(name)
    if build is None:
        why = UNSUPPORTED.get(name) or ("an LLM judge; barkit has no judge" if name.startswith("general-") else None)
        raise BarkitError(f"{where}: open-instruct verifier '{_only(dataset)}' has no barkit verifier"
                          + (f" ({why})" if why else "")
                          + f"; supported: {', '.join(sorted(OPEN_INSTRUCT_VERIFIERS))}")
    return {"prompt": row["messages"], **build(where, row["ground_truth"])}
