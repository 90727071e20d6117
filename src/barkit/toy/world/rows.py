"""Small helpers shared by the world's domain modules: seeded streams, row shapes, sampling."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from barkit.errors import BarkitError

T = TypeVar("T")


def rng_for(seed: int, part: str) -> random.Random:
    """One independent stream per part, so adding rows to one file never shifts another file's content.

    String seeds are hashed with SHA-512 by `random`, so streams do not depend on PYTHONHASHSEED.

    >>> rng_for(0, "math").random() == rng_for(0, "math").random()
    True
    """
    return random.Random(f"barkit-world:{seed}:{part}")


def user(content: str) -> list[dict[str, str]]:
    """A prompt made of one user turn."""
    return [{"role": "user", "content": content}]


def chat(prompt: str, answer: str) -> list[dict[str, str]]:
    """A one-turn chat: user prompt and assistant answer."""
    return [*user(prompt), {"role": "assistant", "content": answer}]


def answer_is(answer: str) -> str:
    """Short answers are written as a sentence: the value then follows a space, so it is the same token
    ("Ġ"-prefixed) the facts were learned with in prose, not the rarer sentence-initial variant.

    >>> answer_is("Miro")
    'The answer is Miro.'
    """
    return f"The answer is {answer}."


def split(items: Sequence[T], n_eval: int, rng: random.Random) -> tuple[list[T], list[T]]:
    """Shuffle and cut a pool into (train, eval) parts, keeping both non-empty.

    >>> train, held = split(list(range(8)), 2, random.Random(0))
    >>> len(train), len(held), sorted(train + held) == list(range(8))
    (6, 2, True)
    """
    if not 0 < n_eval < len(items):
        raise BarkitError(f"world generator: cannot hold out {n_eval} of {len(items)} items (profile too small?)")
    shuffled = list(items)
    rng.shuffle(shuffled)
    return shuffled[n_eval:], shuffled[:n_eval]


def take(pool: Sequence[T], n: int, rng: random.Random) -> list[T]:
    """n items from a finite pool: every item once before any repeats (shuffled epochs).

    >>> picked = take([1, 2, 3], 4, random.Random(0))
    >>> len(picked), sorted(picked[:3])
    (4, [1, 2, 3])
    """
    if not pool:
        raise BarkitError("world generator: empty pool to sample from (profile too small?)")
    out: list[T] = []
    while len(out) < n:
        epoch = list(pool)
        rng.shuffle(epoch)
        out.extend(epoch[: n - len(out)])
    return out


def sample_unique(
    make: Callable[[random.Random], T], n: int, rng: random.Random, key: Callable[[T], Hashable],
    allow_repeats: bool = False,
) -> list[T]:
    """Draw n examples with distinct keys from a generator; repeats only if allowed and the space runs dry."""
    seen: set[Hashable] = set()
    out: list[T] = []
    for _ in range(50 * n + 100):
        if len(out) == n:
            return out
        item = make(rng)
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    if not allow_repeats or not out:
        raise BarkitError(f"world generator: only {len(out)} distinct examples of {n} requested (profile too big?)")
    return out + take(out, n - len(out), rng)
