"""The math reward on real RLVR answers: LaTeX golds, every form a right answer takes, and wrong answers that
share a number with the gold (which the old last-number reading rewarded)."""

from __future__ import annotations

import pytest

from barkit.eval.math_answers import judge_math
from barkit.eval.verifiers import math_answer

R, W = True, False  # the truth: the completion is right / wrong

# (gold, completion, truth)
CASES = [
    # LaTeX fractions
    (r"\frac{1}{2}", r"So the probability is $\boxed{\frac{1}{2}}$.", R),
    (r"\frac{1}{2}", r"\boxed{0.5}", R),
    (r"\frac{1}{2}", r"\boxed{\dfrac{1}{2}}", R),
    (r"\frac{1}{2}", r"\boxed{1/2}", R),
    (r"\frac{1}{2}", r"\boxed{2}", W),
    (r"\frac{1}{2}", r"\boxed{\frac{2}{1}}", W),
    (r"\frac{3}{4}", r"\boxed{\frac{6}{8}}", R),
    (r"-\frac{2}{3}", r"\boxed{-\frac{2}{3}}", R),
    (r"-\frac{2}{3}", r"\boxed{\frac{2}{3}}", W),
    # decimals
    ("0.25", r"\boxed{\frac{1}{4}}", R),
    ("0.25", "The answer is 0.25.", R),
    ("0.25", "The answer is 0.26.", W),
    ("3.14", r"\boxed{3.14}", R),
    # radicals
    (r"\sqrt{2}", r"\boxed{\sqrt{2}}", R),
    (r"\sqrt{2}", r"\boxed{2}", W),
    (r"2\sqrt{3}", r"\boxed{\sqrt{12}}", R),
    (r"2\sqrt{3}", r"\boxed{3\sqrt{2}}", W),
    (r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{\sqrt3}{2}}", R),
    # pi
    (r"\frac{\pi}{4}", r"\boxed{\frac{\pi}{4}}", R),
    (r"\frac{\pi}{4}", r"\boxed{4}", W),
    (r"2\pi", r"\boxed{2\pi}", R),
    (r"2\pi", r"\boxed{\pi}", W),
    # negative numbers
    ("-3", "so x = -3", R),
    ("-3", r"\boxed{-3}", R),
    ("-3", r"\boxed{3}", W),
    ("-3", "so x = 3", W),
    # thousands separators
    ("1234", "#### 1,234", R),
    ("1,234", r"\boxed{1234}", R),
    ("1,234", r"\boxed{1{,}234}", R),
    ("1234", r"\boxed{1243}", W),
    # percentages
    (r"50\%", r"\boxed{50\%}", R),
    (r"50\%", r"\boxed{50}", R),
    (r"50\%", r"\boxed{40\%}", W),
    # intervals
    ("[1,3)", r"\boxed{[1,3)}", R),
    ("[1,3)", r"\boxed{(1,3)}", W),
    (r"(-\infty, 2]", r"\boxed{(-\infty,2]}", R),
    (r"(-\infty, 2]", r"\boxed{(-\infty,2)}", W),
    # tuples / points
    ("(1,2)", r"\boxed{(1,2)}", R),
    ("(1,2)", r"\boxed{(1, 2)}", R),
    ("(1,2)", r"\boxed{2}", W),
    ("(1,2)", r"\boxed{(2,1)}", W),
    # sets
    (r"\{1,2\}", r"\boxed{\{2,1\}}", R),
    (r"\{1,2\}", r"\boxed{\{1,3\}}", W),
    ("1, 2", r"\boxed{2, 1}", R),
    # matrices
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}", R),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\boxed{\begin{pmatrix}2\\1\end{pmatrix}}", W),
    (r"\begin{pmatrix}1&0\\0&1\end{pmatrix}", r"\boxed{\begin{pmatrix}1&0\\0&1\end{pmatrix}}", R),
    # expressions and equations
    ("x^2+2x+1", r"\boxed{(x+1)^2}", R),
    ("x^2+2x+1", r"\boxed{x^2+1}", W),
    ("x=5", r"\boxed{5}", R),
    ("5", r"\boxed{x = 5}", R),
    # text answers and units
    (r"\text{Monday}", r"\boxed{\text{Monday}}", R),
    (r"\text{Monday}", r"\boxed{\text{Tuesday}}", W),
    (r"10 \text{ cm}", r"\boxed{10}", R),
    (r"10 \text{ cm}", r"\boxed{10\text{ cm}}", R),
    (r"10 \text{ cm}", r"\boxed{12}", W),
    # \boxed nesting and several boxed answers
    ("3", r"\boxed{\boxed{3}}", R),
    (r"\frac{1}{2}", r"\boxed{\boxed{\frac{1}{2}}}", R),
    # several boxed answers: the last one is the answer (MATH's reference solutions, open-instruct's verifiers)
    ("5", r"First I thought \boxed{4}, but rechecking gives \boxed{5}.", R),
    ("5", r"\boxed{5} at first; no, it is \boxed{4}.", W),
    (r"\frac{1}{2}", r"Not \boxed{\frac{1}{3}} but \boxed{\frac{1}{2}}", R),
    (r"\frac{1}{2}", r"\boxed{\frac{1}{2}} or maybe \boxed{\frac{1}{3}}", W),
    # no answer
    ("3", "I do not know.", W),
    (r"\frac{1}{2}", "I do not know.", W),
    (r"\frac{1}{2}", r"\boxed{}", W),
    ("3", "", W),
    # answers outside a box
    (r"\frac{1}{2}", r"The answer is $\frac{1}{2}$.", R),
    (r"\frac{1}{2}", r"Final Answer: The final answer is $\frac12$. I hope it is correct.", R),
    ("5", r"The answer is $\frac{10}{2}$.", R),
    ("4", r"The answer is $\frac{10}{2}$.", W),
    # integers in plain text (the toy world's form)
    ("28", "23+5=28", R),
    ("28", "23+5=27", W),
    ("12", "The answer is $12.", R),
    ("12", "It costs 12 dollars, 3 more than 9.", W),
    # a gold with a decimal comma reading must not reward the decimal
    ("1,2", r"\boxed{1.2}", W),
]

# Known limits, each with what barkit returns (the test fails if one changes, so the list stays true):
# (gold, completion, truth, reward barkit gives)
KNOWN_LIMITS = [
    # a hedge that ends on the right answer: the last-boxed convention cannot tell it from a correction
    ("5", r"\boxed{1} or \boxed{5}", W, 1.0),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 60
    assert sum(t for *_, t in CASES) >= 25 and sum(not t for *_, t in CASES) >= 25


@pytest.mark.parametrize("gold,completion,truth", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_every_right_answer_scores_one_and_every_wrong_one_zero(gold, completion, truth):
    judgement = judge_math(completion, gold)
    assert judgement.reward == float(truth), judgement


def test_the_issue_table_is_no_longer_inverted():
    golds = [r"\frac{1}{2}"] * 3 + [r"\sqrt{2}", r"\frac{\pi}{4}", "(1,2)", "(1,2)"]
    completions = [r"\boxed{\frac{1}{2}}", r"\boxed{0.5}", r"\boxed{2}", r"\boxed{2}", r"\boxed{4}",
                   r"\boxed{(1,2)}", r"\boxed{2}"]
    assert math_answer(completions, answer=golds) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_integer_golds_take_the_exact_path():
    assert judge_math("23+5=28", "28").status == "exact"
    assert judge_math(r"so \boxed{28}", "28").status == "exact"
    assert judge_math(r"\boxed{\sqrt{784}}", "28").status == "verified"


def test_statuses_say_why():
    assert judge_math("no idea", r"\frac{1}{2}").status == "no_answer"
    assert judge_math(r"\boxed{3}", r"\frac{1}{2}").status == "wrong"
    assert judge_math(r"\boxed{3}", r"\frac{1}{2}").extracted == "3"


@pytest.mark.parametrize("gold,completion,truth,given", KNOWN_LIMITS)
def test_known_limits_are_what_they_say(gold, completion, truth, given):
    assert judge_math(completion, gold).reward == given != float(truth)
