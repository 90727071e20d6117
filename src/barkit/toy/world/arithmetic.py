"""Math domain: add/subtract word problems answered as a worked equation then "The answer is N."

The equation-first format is what made 2-digit arithmetic learnable for ~1M-parameter models in the
design probe. A fifth of all (a, op, b) combinations is held out for evaluation and never appears in any
training text, so eval problems cannot be memorised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from barkit.toy.world.entities import World
from barkit.toy.world.profiles import WorldProfile
from barkit.toy.world.rows import chat, rng_for, sample_unique, split, user

OBJECTS = ("apples", "coins", "books", "stamps", "marbles", "shells", "cards", "pens")
TEMPLATES = {
    "+": ("{n} has {a} {obj}. {n} gets {b} more. How many {obj} does {n} have now?",
          "{n} had {a} {obj} and found {b} more. How many {obj} does {n} have?"),
    "-": ("{n} has {a} {obj}. {n} gives away {b}. How many {obj} does {n} have left?",
          "{n} had {a} {obj} and lost {b}. How many {obj} does {n} have left?"),
}


@dataclass(frozen=True)
class Sum:
    a: int
    op: str
    b: int

    @property
    def value(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    def equation(self, notation: str = "spaced") -> str:
        """The sum and its value, in the profile's notation.

        >>> Sum(23, "+", 5).equation(), Sum(23, "+", 5).equation("compact")
        ('23 + 5 = 28', '23+5=28')
        """
        if notation == "compact":
            return f"{self.a}{self.op}{self.b}={self.value}"
        return f"{self.a} {self.op} {self.b} = {self.value}"

    def worked(self, notation: str = "spaced") -> str:
        """The answer format every math row uses.

        >>> Sum(23, "+", 5).worked()
        '23 + 5 = 28. The answer is 28.'
        """
        return f"{self.equation(notation)}. The answer is {self.value}."


def all_sums(profile: WorldProfile) -> list[Sum]:
    """Every combination the profile allows: 2-digit a, 1- or 2-digit b, no negative results."""
    b_range = range(1, 10) if profile.math_b_digits == 1 else range(10, 100)
    sums = [Sum(a, "+", b) for a in range(10, 100) for b in b_range]
    sums += [Sum(a, "-", b) for a in range(10, 100) for b in b_range if b < a]
    return sums


def split_sums(profile: WorldProfile, seed: int) -> tuple[list[Sum], list[Sum]]:
    """(train, eval) combinations; eval gets a fifth."""
    sums = all_sums(profile)
    return split(sums, len(sums) // 5, rng_for(seed, "math-split"))


def _problem(s: Sum, names: tuple[str, ...], rng: random.Random) -> str:
    template = rng.choice(TEMPLATES[s.op])
    return template.format(n=rng.choice(names), a=s.a, b=s.b, obj=rng.choice(OBJECTS))


def _problems(sums: list[Sum], names: tuple[str, ...], n: int, rng: random.Random) -> list[tuple[str, Sum]]:
    def make(r: random.Random) -> tuple[str, Sum]:
        s = r.choice(sums)
        return _problem(s, names, r), s
    return sample_unique(make, n, rng, key=lambda t: t[0], allow_repeats=True)


def text_rows(sums: list[Sum], names: tuple[str, ...], n: int, rng: random.Random,
              notation: str = "spaced") -> list[str]:
    """Plain text: half worked word problems, half drills of bare equations."""
    out: list[str] = []
    for i, (problem, s) in enumerate(_problems(sums, names, n, rng)):
        if i % 2:
            out.append(f"{problem}\n{s.worked(notation)}")
        else:
            drill = rng.sample(sums, rng.randint(3, 6))
            out.append(" ".join(f"{d.equation(notation)}." for d in drill))
    return out


def build(world: World, profile: WorldProfile, seed: int) -> dict[str, list[dict]]:
    """math_midtrain / math_sft / math_rl rows and the math eval items."""
    train, held = split_sums(profile, seed)
    names = tuple(p.name for p in world.train_people)
    eval_names = tuple(p.name for p in world.heldout_people)
    notation, scale = profile.math_notation, profile.math_rows_scale
    mid = text_rows(train, names, scale * profile.midtrain_rows, rng_for(seed, "math-midtrain"), notation)
    sft = _problems(train, names, scale * profile.domain_sft_rows, rng_for(seed, "math-sft"))
    rl = _problems(train, names, profile.rl_rows, rng_for(seed, "math-rl"))
    ev = _problems(held, eval_names, profile.eval_items, rng_for(seed, "math-eval"))
    return {
        "math_midtrain.jsonl": [{"text": t} for t in mid],
        "math_sft.jsonl": [{"messages": chat(p, s.worked(notation)), "domain": "math"} for p, s in sft],
        "math_rl.jsonl": [{"prompt": user(p), "verifier": "math_answer", "answer": str(s.value)} for p, s in rl],
        "eval/math.jsonl": [{"category": "math", "benchmark": "toy_math", "verifier": "math_answer",
                             "messages": user(p), "answer": str(s.value), "reference": s.worked(notation)}
                            for p, s in ev],
    }
