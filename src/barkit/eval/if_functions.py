"""open-instruct's older instruction-following rows: a ground truth ``{"func_name": NAME, **kwargs}`` naming one
of 25 checks (its `if_functions` module, the format of `RLVR-GSM-MATH-IF-Mixed-Constraints`-style rows).

The semantics are open-instruct's, re-implemented here so that a reward means what it meant in the recipe
(they differ in places from IFEval's checkers in `barkit.eval.ifeval_checks`: e.g. `validate_lowercase` only
asks that lowercasing changes nothing). Language detection needs a detector barkit does not ship, so
`validate_response_language` has no check and its rows score None (unscored), never 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

IF_FUNCTIONS: dict[str, Callable[..., bool]] = {}


def _register(fn: Callable[..., bool]) -> Callable[..., bool]:
    IF_FUNCTIONS[fn.__name__] = fn
    return fn


def _quantity(count: int, n: int, quantifier: str, around: int) -> bool:
    if quantifier == "at least":
        return count >= n
    if quantifier == "at most":
        return count <= n
    if quantifier == "around":
        return abs(count - n) <= around
    return False


@_register
def verify_keywords(text: str, keyword_list: list) -> bool:
    return all(k.lower() in text.lower() for k in keyword_list)


@_register
def verify_keyword_frequency(text: str, word: str, N: int) -> bool:
    return re.findall(r"\b\w+\b", text.lower()).count(word.lower()) == N


@_register
def validate_forbidden_words(text: str, forbidden_words: list) -> bool:
    return not any(w.lower() in text.lower() for w in forbidden_words)


@_register
def verify_letter_frequency(text: str, letter: str, N: int) -> bool:
    if len(letter) != 1:
        raise ValueError("letter must be one character")
    return text.count(letter) == N


@_register
def verify_paragraph_count(text: str, N: int) -> bool:
    """Paragraphs separated by the markdown divider `* * *`, none of them empty."""
    cleaned = "\n".join(line.strip() for line in text.splitlines()).strip()
    parts = cleaned.split("* * *")
    return all(p.strip() for p in parts) and len(parts) == N


@_register
def validate_word_constraint(text: str, N: int, quantifier: str) -> bool:
    return _quantity(len(text.split()), N, quantifier, max(round(N * 0.1), 1))


@_register
def verify_sentence_constraint(text: str, N: int, quantifier: str) -> bool:
    sentences = re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?|!)\s", text)
    return _quantity(len(sentences), N, quantifier, 1)


@_register
def validate_paragraphs(text: str, N: int, first_word: str, i: int) -> bool:
    """N paragraphs split by a blank line; the i-th (1-based) starts with `first_word`."""
    paragraphs = text.split("\n\n")
    return len(paragraphs) == N and paragraphs[i - 1].strip().startswith(first_word)


@_register
def verify_postscript(text: str, postscript_marker: str) -> bool:
    at = text.find(postscript_marker)
    return at >= 0 and len(text[at:].strip()) > len(postscript_marker)


@_register
def validate_placeholders(text: str, N: int) -> bool:
    return len(re.findall(r"\[(.*?)\]", text)) >= N


@_register
def verify_bullet_points(text: str, N: int) -> bool:
    return sum(1 for line in text.split("\n") if line.strip().startswith(("*", "-"))) == N


@_register
def validate_title(text: str) -> bool:
    return re.search(r"<<(.*?)>>", text) is not None


@_register
def validate_choice(text: str, options: list) -> bool:
    return any(option in text for option in options)


@_register
def validate_highlighted_sections(text: str, N: int) -> bool:
    return len(re.findall(r"\*(.*?)\*", text)) >= N


@_register
def validate_sections(text: str, N: int, section_splitter: str) -> bool:
    """At least N numbered section headers ('Section 1', 'SECTION 2', ...)."""
    parts = re.split(r"\s?" + re.escape(section_splitter) + r"\s?\d+\s?", text, flags=re.IGNORECASE)
    return len(parts) - 1 >= N


@_register
def validate_json_format(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@_register
def validate_repeat_prompt(text: str, original_prompt: str) -> bool:
    return text.startswith(original_prompt)


@_register
def validate_two_responses(text: str) -> bool:
    if text.count("******") != 1:
        return False
    first, second = (part.strip() for part in text.split("******"))
    return first != second


@_register
def validate_uppercase(text: str) -> bool:
    return text == text.upper()


@_register
def validate_lowercase(text: str) -> bool:
    return text == text.lower()


@_register
def validate_frequency_capital_words(text: str, N: int, quantifier: str) -> bool:
    return _quantity(len(re.findall(r"\b[A-Z]+\b", text)), N, quantifier, max(round(N * 0.1), 1))


@_register
def validate_end(text: str, end_phrase: str) -> bool:
    return text.endswith(end_phrase)


@_register
def validate_quotation(text: str) -> bool:
    return text.startswith('"') and text.endswith('"')


@_register
def validate_no_commas(text: str) -> bool:
    return "," not in text


# named in open-instruct's rows, but needs a language detector barkit does not ship: unscored
UNSCORED = {"validate_response_language"}
KNOWN = set(IF_FUNCTIONS) | UNSCORED


def strip_thinking(text: str) -> str:
    """What open-instruct checks: the reply after its last `</think>`, without `<answer>` tags.

    >>> strip_thinking("<think>plan</think> <answer>done</answer>")
    'done'
    """
    text = text.replace("<|assistant|>", "").strip().split("</think>")[-1]
    return text.replace("<answer>", "").replace("</answer>", "").strip()


def check_if_function(text: str, constraint: dict) -> bool | None:
    """One `{"func_name", **kwargs}` constraint; None where barkit has no check for it. As in open-instruct, a
    check without arguments sees the raw reply and one with arguments the reply after its thinking section.

    >>> check_if_function("no commas here", {"func_name": "validate_no_commas"})
    True
    >>> check_if_function("<think>a, b</think>Hello world", {"func_name": "verify_keywords", "keyword_list": ["hello"]})
    True
    """
    args = {k: v for k, v in constraint.items() if k != "func_name" and v is not None}
    name = constraint.get("func_name")
    if name in UNSCORED:
        return None
    fn = IF_FUNCTIONS[name]
    has_args = any(k != "func_name" for k in constraint)
    try:
        return bool(fn(strip_thinking(text), **args) if has_args else fn(text))
    except (ValueError, IndexError, KeyError, TypeError):
        return False
