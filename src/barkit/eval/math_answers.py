"""Math answers: extract a solution's final answer and judge it against a gold answer.

Real RLVR rows carry LaTeX gold answers (`\\frac{1}{2}`, `\\sqrt{2}`, `(1,2)`, `[1,3)`, matrices, text).
Reading those as "the last number" inverts the reward, so anything that is not a plain number goes to the
field's checker, HF's `math-verify` (sympy-based extraction and equivalence: fractions = decimals, radicals,
pi, intervals, tuples, sets, matrices, units stripped). Plain-number golds keep an exact path (GSM8K
`#### n`, `\\boxed{n}`, "the answer is n", else the last number; compared as fractions), which is what the
toy world uses: integer rewards stay bit-identical and cost microseconds.

Every judgement says how it was reached (`status`), so RL can log the share of rollouts with no answer and
`barkit reward` can show a prompt set's extractions before GPU hours are spent on it. Exceptions and
timeouts of the checker give reward 0 with status `error` / `timeout`; they never stop a step.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from fractions import Fraction

# statuses of a judgement
EXACT, VERIFIED, WRONG, NO_ANSWER, ERROR, TIMEOUT = "exact", "verified", "wrong", "no_answer", "error", "timeout"
FAILED = (ERROR, TIMEOUT)

_NUMBER = re.compile(
    r"(?:(?<![\w)])[-−])?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?"
    r"|(?:(?<![\w)])[-−])?\$?\.\d+"
)
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:|=)|answer\s+should\s+be", re.IGNORECASE)
_PLAIN_GOLD = re.compile(r"\s*[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s*|\s*[-−]?\d+\s?/\s?\d+\s*")


@dataclass(frozen=True)
class MathJudgement:
    """reward in {0, 1}; `extracted` is the answer read from the completion (None if none), `gold` the gold
    answer as judged; `status` one of exact, verified, wrong, no_answer, error, timeout."""

    reward: float
    extracted: str | None
    gold: str
    status: str


def canonical_number(token: str) -> str:
    """'$1,234' -> '1234', '−3' -> '-3', '3 / 4' -> '3/4'."""
    return re.sub(r"[\s,$]", "", token).replace("−", "-")


def find_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), honouring nested braces."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i:j - 1] if depth == 0 else None


def _latex_to_plain(text: str) -> str:
    """Strip the LaTeX a boxed number typically carries: \\frac, \\text{..}, \\$, {,}."""
    text = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = re.sub(r"\\text\{[^{}]*\}|\\mbox\{[^{}]*\}", "", text)
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "").replace("\\!", "")
    text = text.replace("\\left", "").replace("\\right", "").replace("{", "").replace("}", "")
    return text.strip().strip("$").strip()


def _first_number(text: str) -> str | None:
    match = _NUMBER.search(text)
    return canonical_number(match.group(0)) if match else None


def extract_number_answer(text: str) -> str | None:
    """The final answer of a solution when it is a plain number; None when there is none, or when the last
    `\\boxed{}` holds more than a number (that answer is math-verify's to read).

    Order: GSM8K ``#### n``, the last ``\\boxed{}``, the number after "the answer is", else the last number.

    >>> extract_number_answer("So she earns $1,234 a week.\\n#### 1,234")
    '1234'
    >>> extract_number_answer("Thus $x = \\\\boxed{\\\\frac{3}{4}}$.")
    '3/4'
    >>> extract_number_answer("The answer is -12 dollars. Check: 3 + 4 = 7")
    '-12'
    >>> extract_number_answer("It costs 12 dollars, 3 more than 9.5")
    '9.5'
    >>> extract_number_answer("\\\\boxed{\\\\sqrt{2}}") is None
    True
    """
    if "####" in text:
        found = _first_number(text.rsplit("####", 1)[1])
        if found is not None:
            return found
    boxed = find_boxed(text)
    if boxed is not None:
        whole = _NUMBER.fullmatch(_latex_to_plain(boxed).rstrip("%. ").strip())
        return canonical_number(whole.group(0)) if whole else None
    phrases = list(_ANSWER_PHRASE.finditer(text))
    if phrases:
        found = _first_number(text[phrases[-1].end():])
        if found is not None:
            return found
    numbers = _NUMBER.findall(text)
    return canonical_number(numbers[-1]) if numbers else None


def to_fraction(text: str) -> Fraction | None:
    try:
        return Fraction(canonical_number(text.strip().rstrip("%")))
    except (ValueError, ZeroDivisionError):
        return None


def is_plain_number(gold: str) -> bool:
    """Golds the exact path judges: integers, decimals, a/b, with thousands separators or a sign.

    >>> [is_plain_number(g) for g in ["42", "-1,234.5", "3/4", "\\\\frac{1}{2}", "(1,2)", "1,2"]]
    [True, True, True, False, False, False]
    """
    return _PLAIN_GOLD.fullmatch(gold) is not None and to_fraction(gold) is not None


def _numbers_equal(a: str, b: str) -> bool:
    x, y = to_fraction(a), to_fraction(b)
    return x is not None and y is not None and abs(x - y) <= Fraction(1, 10**6) * max(1, abs(y))


def _timeout(timeout_s: float | None) -> int | None:
    """math-verify times out with SIGALRM (whole seconds), which only the main thread may use; elsewhere
    (a scoring thread pool) it runs without its own timeout."""
    if not timeout_s or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, round(timeout_s))


def _parse_gold(gold: str, timeout: int | None) -> list:
    """The gold as LaTeX (inside \\boxed{}, as a checker reads a reference solution), else as plain text."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(f"\\boxed{{{gold}}}", [LatexExtractionConfig()], parsing_timeout=timeout, raise_on_error=True)
    if not parsed or isinstance(parsed[0], str):
        plain = parse(gold, [ExprExtractionConfig()], parsing_timeout=timeout, raise_on_error=True)
        parsed = plain or parsed
    return parsed


def _judge_with_math_verify(completion: str, gold: str, timeout_s: float | None) -> MathJudgement:
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    timeout = _timeout(timeout_s)
    try:
        gold_parsed = _parse_gold(gold, timeout)
        boxed = find_boxed(completion)  # the last boxed answer is the answer, as in the exact path
        pred = parse(completion if boxed is None else f"$\\boxed{{{boxed}}}$", parsing_timeout=timeout,
                     raise_on_error=True)
        if not pred:
            return MathJudgement(0.0, None, gold, NO_ANSWER)
        extracted = pred[-1] if isinstance(pred[-1], str) else str(pred[0])
        if not gold_parsed:  # a gold no parser reads: compare the texts as written
            same = _normalise_text(extracted) == _normalise_text(gold)
            return MathJudgement(float(same), extracted, gold, VERIFIED if same else WRONG)
        right = verify(gold_parsed, pred, timeout_seconds=timeout, raise_on_error=True)
    except TimeoutException:
        return MathJudgement(0.0, None, gold, TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any checker failure scores 0 and is counted, never stops a step
        logging.getLogger(__name__).debug("math-verify failed on %r: %s", gold, exc)
        return MathJudgement(0.0, None, gold, ERROR)
    return MathJudgement(1.0 if right else 0.0, extracted, gold, VERIFIED if right else WRONG)


def _normalise_text(text: str) -> str:
    return re.sub(r"\s+|\\[,;!:]|\\text\{|\}|\{|\$", "", text).lower()


def judge_math(completion: str, gold: str, timeout_s: float | None = 5.0) -> MathJudgement:
    """Judge one completion against one gold answer (see the module docstring for the two paths).

    >>> judge_math("#### 1,234", "1234")
    MathJudgement(reward=1.0, extracted='1234', gold='1234', status='exact')
    >>> judge_math("so \\\\boxed{0.5}", "\\\\frac{1}{2}").reward
    1.0
    >>> judge_math("\\\\boxed{2}", "\\\\frac{1}{2}").reward
    0.0
    >>> judge_math("I am not sure.", "7").status
    'no_answer'
    """
    gold = str(gold).strip()
    if "####" in gold:  # a GSM8K reference solution: its answer follows the last ####
        gold = gold.rsplit("####", 1)[1].strip()
    if is_plain_number(gold):
        number = _plain_answer(completion)
        if number is not None:
            right = _numbers_equal(number, gold)
            return MathJudgement(float(right), number, gold, EXACT if right else WRONG)
        if "\\" not in completion:
            return MathJudgement(0.0, None, gold, NO_ANSWER)
    return _judge_with_math_verify(completion, gold, timeout_s)


def _plain_answer(completion: str) -> str | None:
    """The exact path's answer: a GSM8K `#### n`, a boxed plain number, or in a completion without LaTeX
    the number after "the answer is", else the last number. None sends the completion to math-verify."""
    if "####" in completion and _first_number(completion.rsplit("####", 1)[1]) is not None:
        return extract_number_answer(completion)
    if find_boxed(completion) is not None or "\\" not in completion:
        return extract_number_answer(completion)
    return None
