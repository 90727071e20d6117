"""Copy and in-context recall: the general skill every real LM has and a tiny one must be taught.

Code (copy the function name and constant), tool use (copy argument values) and reasoning (look up a fact
stated in the prompt) all need the model to find a token in its context and repeat it. Real 7B anchors
have induction heads from web-scale pretraining; the toy base only grows them when its corpus rewards
copying. Without them a domain expert learns to copy by moving shared embeddings far, and averaging
shared tensors at compose time erases the skill (the failure seen in the first default demo). So the
corpus gets repeat-a-list and look-up-a-value texts, and the general SFT a "repeat these words" task.

Words come from training vocabulary only (train people, places, common nouns, digits): held-out people
stay prose-only, and no code name or arithmetic appears.
"""

from __future__ import annotations

import random

from barkit.toy.world.entities import JOBS, PRODUCTS, World
from barkit.toy.world.general import COLORS, KEYWORDS, PETS, ROOMS, THINGS
from barkit.toy.world.rows import chat

IDENTIFIER_FORMATS = ("Names: {c}. Names again: {c}.", "Call {a} then {a}.")
REPEAT_FORMATS = (
    "Words: {a}. Again: {a}.",
    "List: {c}. The same list: {c}.",
    "{a}. I repeat: {a}.",
    "Say {a}. Said: {a}.",
)
LOOKUP_FORMATS = ("{pairs}. {key} has {value}.", "{pairs}. So {key} has {value}.")
REPEAT_PROMPTS = ("Repeat these words exactly: {a}", "Say back this list: {c}")


def word_pool(world: World) -> tuple[str, ...]:
    """Single words the corpus already uses, so copying is learned over the vocabulary at large."""
    names = [p.name for p in world.train_people] + [c.name for c in world.cities] + [o.name for o in world.orgs]
    return tuple(names + list(PETS + COLORS + ROOMS + THINGS + KEYWORDS + JOBS + PRODUCTS)
                 + [str(d) for d in range(10)])


def _words(pool: tuple[str, ...], rng: random.Random, low: int = 3, high: int = 7) -> list[str]:
    return rng.sample(pool, rng.randint(low, high))


def _identifiers(pool: tuple[str, ...], rng: random.Random) -> list[str]:
    """`blue_clocks`-style names: the tag tokens code copies after an underscore get trained too. The first
    word is never a code verb (add, minus, ...), so no code eval function name can appear."""
    firsts = COLORS + PETS + KEYWORDS
    return [f"{rng.choice(firsts)}_{rng.choice(pool).lower()}" for _ in range(rng.randint(2, 4))]


def _lookup(world: World, rng: random.Random) -> str:
    """`Kevo has 7. Raku has 2. Raku has 2.`: recall the value bound to a key earlier in the text."""
    keys = rng.sample([p.name for p in world.train_people], rng.randint(2, 4))
    values = [str(rng.randrange(10)) if rng.random() < 0.5 else rng.choice(PETS + COLORS + PRODUCTS) for _ in keys]
    pairs = ". ".join(f"{k} has {v}" for k, v in zip(keys, values))
    i = rng.randrange(len(keys))
    return rng.choice(LOOKUP_FORMATS).format(pairs=pairs, key=keys[i], value=values[i])


def pretrain_texts(world: World, n: int, rng: random.Random) -> list[str]:
    """n copy texts: repeat a word list (1/2), repeat identifiers (1/4), look up a bound value (1/4)."""
    pool = word_pool(world)
    tags = tuple(JOBS + PRODUCTS)
    texts = []
    for _ in range(n):
        u = rng.random()
        if u < 0.5:
            words = _words(pool, rng)
            texts.append(rng.choice(REPEAT_FORMATS).format(a=" ".join(words), c=", ".join(words)))
        elif u < 0.75:
            names = _identifiers(tags, rng)
            texts.append(rng.choice(IDENTIFIER_FORMATS).format(a=" and ".join(names), c=", ".join(names)))
        else:
            texts.append(_lookup(world, rng))
    return texts


def sft_rows(world: World, n: int, rng: random.Random) -> list[dict]:
    """Instruction-following chats whose answer is the prompt's list, verbatim."""
    pool = word_pool(world)
    rows = []
    for _ in range(n):
        words = _words(pool, rng)
        template = rng.choice(REPEAT_PROMPTS)
        answer = ", ".join(words) if "{c}" in template else " ".join(words)
        rows.append({"messages": chat(template.format(a=" ".join(words), c=", ".join(words)), answer),
                     "category": "copy"})
    return rows
