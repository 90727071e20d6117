"""Code domain: tiny one-line Python functions from a small family, HumanEval-style tests.

The instruction names the function and its constant, so a small model only has to map the description
to an expression and copy the name. Names are `<verb>_<tag>` with tags from the world's one-token words
(jobs, products); every eval name is a (verb, tag) pairing that never appears in any training file, while
each tag is copied in training with other verbs (novel multi-token names were not copied reliably).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from barkit.toy.world.entities import JOBS, PRODUCTS, World
from barkit.toy.world.profiles import WorldProfile
from barkit.toy.world.rows import chat, rng_for, sample_unique, user

TAGS = JOBS + PRODUCTS


@dataclass(frozen=True)
class Op:
    verb: str  # function-name prefix
    args: str
    desc: str  # may hold {k}
    expr: str  # may hold {k}
    inputs: tuple[tuple[object, ...], ...]  # test arguments


OPS = (
    Op("add", "x", "x plus {k}", "x + {k}", ((0,), (3,), (-2,))),
    Op("minus", "x", "x minus {k}", "x - {k}", ((0,), (10,), (-1,))),
    Op("times", "x", "x times {k}", "x * {k}", ((1,), (3,), (-2,))),
    Op("larger", "a, b", "the larger of a and b", "max(a, b)", ((1, 5), (7, 2), (-3, -4))),
    Op("smaller", "a, b", "the smaller of a and b", "min(a, b)", ((1, 5), (7, 2), (-3, -4))),
    Op("repeat", "s", "s repeated {k} times", "s * {k}", (("ab",), ("x",), ("",))),
    Op("shout", "s", "s in upper case", "s.upper()", (("ab",), ("Hi you",), ("",))),
    Op("head", "s", "the first {k} characters of s", "s[:{k}]", (("abcdefghij",), ("xy",), ("",))),
)
TEMPLATES = (
    "Write a Python function {name}({args}) that returns {desc}.",
    'Complete the function.\ndef {name}({args}):\n    """Return {desc}."""',
)


@dataclass(frozen=True)
class Func:
    op: Op
    tag: str
    k: int

    @property
    def name(self) -> str:
        return f"{self.op.verb}_{self.tag}"

    @property
    def desc(self) -> str:
        return self.op.desc.format(k=self.k)

    def source(self) -> str:
        """The one reference solution.

        >>> Func(OPS[0], "kelo", 3).source()
        'def add_kelo(x):\\n    return x + 3'
        """
        return f"def {self.name}({self.op.args}):\n    return {self.op.expr.format(k=self.k)}"

    def call(self, args: tuple[object, ...], fn_name: str) -> str:
        """An assert line calling `fn_name` with expected value from the reference solution.

        >>> Func(OPS[0], "kelo", 3).call((2,), "candidate")
        'assert candidate(2) == 5'
        """
        scope: dict = {}
        exec(self.source(), scope)  # our own generated one-liner, not user input
        return f"assert {fn_name}({', '.join(map(repr, args))}) == {scope[self.name](*args)!r}"

    def tests(self) -> str:
        """HumanEval-style check function."""
        return "def check(candidate):\n" + "".join(f"    {self.call(a, 'candidate')}\n" for a in self.op.inputs)


Pairs = tuple[tuple[Op, str], ...]


def split_pairs(seed: int) -> dict[str, Pairs]:
    """(op, tag) pairings for train and eval; each tag is held out with exactly one op."""
    tags = list(TAGS)
    rng_for(seed, "code-split").shuffle(tags)
    k = len(tags) // len(OPS)
    held = {(op.verb, tag) for i, op in enumerate(OPS) for tag in tags[i * k:(i + 1) * k]}
    pairs = [(op, tag) for op in OPS for tag in TAGS]
    return {"train": tuple(p for p in pairs if (p[0].verb, p[1]) not in held),
            "eval": tuple(p for p in pairs if (p[0].verb, p[1]) in held)}


def _func(pairs: Pairs, rng: random.Random) -> Func:
    op, tag = rng.choice(pairs)
    return Func(op, tag, rng.randint(2, 9))


def _prompt(f: Func, rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(name=f.name, args=f.op.args, desc=f.desc)


def _tasks(pairs: Pairs, n: int, rng: random.Random) -> list[tuple[str, Func]]:
    def make(r: random.Random) -> tuple[str, Func]:
        f = _func(pairs, r)
        return _prompt(f, r), f
    return sample_unique(make, n, rng, key=lambda t: t[0], allow_repeats=True)


def text_rows(pairs: Pairs, n: int, rng: random.Random) -> list[str]:
    """Code-like plain text: documented function plus a usage assert."""
    out: list[str] = []
    for f in (_func(pairs, rng) for _ in range(n)):
        body = f.source().replace(":\n", f':\n    """Return {f.desc}."""\n', 1)
        out.append(f"{body}\n\n{f.call(rng.choice(f.op.inputs), f.name)}")
    return out


def verifier_columns(f: Func) -> dict:
    """What the code_tests verifier needs; the prefix is a comment so prefix + completion stays valid Python."""
    return {"verifier": "code_tests", "tests": f.tests(), "entry_point": f.name,
            "prompt_prefix": f"# Task: {f.name}({f.op.args}) returns {f.desc}.\n"}


def build(world: World, profile: WorldProfile, seed: int) -> dict[str, list[dict]]:
    """code_midtrain / code_sft / code_rl rows and the code eval items."""
    pairs = split_pairs(seed)
    train, held = pairs["train"], pairs["eval"]
    mid = text_rows(train, profile.midtrain_rows, rng_for(seed, "code-midtrain"))
    sft = _tasks(train, profile.domain_sft_rows, rng_for(seed, "code-sft"))
    rl = _tasks(train, profile.rl_rows, rng_for(seed, "code-rl"))
    ev = _tasks(held, profile.eval_items, rng_for(seed, "code-eval"))
    return {
        "code_midtrain.jsonl": [{"text": t} for t in mid],
        "code_sft.jsonl": [{"messages": chat(p, f.source()), "domain": "code"} for p, f in sft],
        "code_rl.jsonl": [{"prompt": user(p), **verifier_columns(f)} for p, f in rl],
        "eval/code.jsonl": [{"category": "code", "benchmark": "toy_humaneval", "messages": user(p),
                             "reference": f.source(), **verifier_columns(f)} for p, f in ev],
    }
