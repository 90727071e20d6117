"""General post-training tasks besides knowledge: reasoning over facts in the prompt, and instruction
following with verifiable constraints (IFEval ids and kwargs), both answered in one fixed style."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable

from barkit.toy.world.entities import Person, World, with_article
from barkit.toy.world.rows import answer_is, chat, sample_unique, user

COMPARATIVES = ("taller", "older", "faster")
PETS = ("cat", "dog", "bird", "fish", "horse", "goat")
COLORS = ("red", "blue", "green", "black", "white", "brown")
ROOMS = ("kitchen", "garden", "hall", "attic", "cellar", "office")
THINGS = ("key", "coin", "ring", "book")
KEYWORDS = ("happy", "busy", "kind", "clever", "quiet", "brave")
END_PHRASES = ("Is there anything else?", "Have a nice day.", "That is all.")
INTROS = ("Tell me about {p}.", "Describe {p}.")

Task = tuple[str, str, dict]  # prompt, answer, verifier columns

# Reasoning prompts name the world's people (one token each; held-out people in eval) in relations that are
# not world facts (pets, boxes, heights), and answers are closed-set words (a colour, a room, yes/no):
# tiny models learn to match names long before they learn to spell unseen ones.


def _joined(facts: list[str], question: str, rng: random.Random) -> str:
    rng.shuffle(facts)
    return f"{' '.join(facts)} {question}"


def _pets(names: tuple[str, ...], rng: random.Random) -> Task:
    """Two hops with two distractors: person -> pet -> colour."""
    people, pets, colors = rng.sample(names, 3), rng.sample(PETS, 3), rng.sample(COLORS, 3)
    facts = [f"{n} has a {p}." for n, p in zip(people, pets)] + [f"The {p} is {c}." for p, c in zip(pets, colors)]
    i = rng.randrange(3)
    return _joined(facts, f"What color is {people[i]}'s pet?", rng), colors[i], {"answer": colors[i]}


def _boxes(names: tuple[str, ...], rng: random.Random) -> Task:
    """Two hops with a distractor chain: owner's thing -> box -> room."""
    people, colors, rooms = rng.sample(names, 2), rng.sample(COLORS, 2), rng.sample(ROOMS, 2)
    thing = rng.choice(THINGS)
    facts = [f"{n}'s {thing} is in the {c} box." for n, c in zip(people, colors)]
    facts += [f"The {c} box is in the {r}." for c, r in zip(colors, rooms)]
    i = rng.randrange(2)
    return _joined(facts, f"Where is {people[i]}'s {thing}?", rng), rooms[i], {"answer": rooms[i]}


def _order(names: tuple[str, ...], rng: random.Random) -> Task:
    """Transitivity over three people: is x more ... than y, for a pair not stated directly."""
    ranked = rng.sample(names, 3)
    comparative = rng.choice(COMPARATIVES)
    facts = [f"{ranked[0]} is {comparative} than {ranked[1]}.", f"{ranked[1]} is {comparative} than {ranked[2]}."]
    yes = rng.random() < 0.5
    x, y = (ranked[0], ranked[2]) if yes else (ranked[2], ranked[0])
    answer = "yes" if yes else "no"
    return _joined(facts, f"Is {x} {comparative} than {y}?", rng), answer, {"answer": answer}


REASONING_TASKS = (_pets, _boxes, _order)


def _facts(world: World, p: Person) -> list[str]:
    country = world.city(p.city).country
    return [f"{p.name} lives in {p.city}.", f"{p.name} works as {with_article(p.job)}.",
            f"{p.name} works for {p.org}.", f"{p.city} is in {country}."]


def count_words(text: str) -> int:
    """Words as IFEval counts them (runs of word characters).

    >>> count_words("Kela lives in Miro.")
    4
    """
    return len(re.findall(r"\w+", text))


def _constraint(kind: str, **kwargs: object) -> dict:
    return {"type": kind, "kwargs": kwargs}


def _capital(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    f = _facts(world, p)
    return "Use only capital letters.", f"{f[0]} {f[1]}".upper(), _constraint("change_case:english_capital")


def _lower(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    f = _facts(world, p)
    return "Use only lowercase letters.", f"{f[0]} {f[1]}".lower(), _constraint("change_case:english_lowercase")


def _few_words(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    n = rng.choice((6, 7, 8))
    return (f"Use fewer than {n} words.", _facts(world, p)[0],
            _constraint("length_constraints:number_words", relation="less than", num_words=n))


def _many_words(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    n = rng.choice((10, 12, 15))
    sentences: list[str] = []
    for fact in _facts(world, p):
        if count_words(" ".join(sentences)) >= n:
            break
        sentences.append(fact)
    return (f"Use at least {n} words.", " ".join(sentences),
            _constraint("length_constraints:number_words", relation="at least", num_words=n))


def _keyword(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    word = rng.choice(KEYWORDS)
    answer = f"{p.name} is {with_article(word)} {p.job} who lives in {p.city}."
    return f'Include the word "{word}".', answer, _constraint("keywords:existence", keywords=[word])


def _forbidden(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    word = rng.choice(("lives", "works"))
    answer = (f"{p.name} is {with_article(p.job)} in {p.city}." if word == "lives"
              else f"{p.name} lives in {p.city} and is {with_article(p.job)}.")
    return f'Do not use the word "{word}".', answer, _constraint("keywords:forbidden_words", forbidden_words=[word])


def _bullets(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    n = rng.choice((2, 3, 4))
    answer = "\n".join(f"* {fact}" for fact in _facts(world, p)[:n])
    return (f"Answer with {n} bullet points.", answer,
            _constraint("detectable_format:number_bullet_lists", num_bullets=n))


def _json(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    answer = json.dumps({"name": p.name, "city": p.city, "job": p.job})
    return "Answer in JSON format.", answer, _constraint("detectable_format:json_format")


def _end(world: World, p: Person, rng: random.Random) -> tuple[str, str, dict]:
    phrase = rng.choice(END_PHRASES)
    return (f'End your answer with the phrase "{phrase}"', f"{_facts(world, p)[0]} {phrase}",
            _constraint("startend:end_checker", end_phrase=phrase))


CHAT_TASKS: tuple[Callable[[World, Person, random.Random], tuple[str, str, dict]], ...] = (
    _capital, _lower, _few_words, _many_words, _keyword, _forbidden, _bullets, _json, _end,
)


def _instruction(world: World, people: tuple[Person, ...], rng: random.Random) -> Task:
    task = rng.choice(CHAT_TASKS)
    person = rng.choice(people)
    instruction, answer, constraint = task(world, person, rng)
    prompt = f"{rng.choice(INTROS).format(p=person.name)} {instruction}"
    return prompt, answer, {"constraints": [constraint]}


def _reasoning(world: World, split: str, rng: random.Random) -> Task:
    return rng.choice(REASONING_TASKS)(world.people_names(split), rng)


def sft_rows(world: World, category: str, n: int, rng: random.Random) -> list[dict]:
    """General SFT rows of one category ('reasoning' or 'chat') with distinct prompts."""
    make = _maker(world, category, "train")
    rows = sample_unique(lambda r: make(r), n, rng, key=lambda t: t[0], allow_repeats=True)
    return [{"messages": chat(prompt, _target(category, answer)), "category": category} for prompt, answer, _ in rows]


def _target(category: str, answer: str) -> str:
    return answer_is(answer) if category == "reasoning" else answer


def eval_items(world: World, category: str, n: int, rng: random.Random) -> list[dict]:
    """Held-out items: reasoning over names/places never used in training, chat about held-out people."""
    make = _maker(world, category, "eval")
    benchmark, verifier = {"reasoning": ("toy_reasoning", "exact_match"), "chat": ("toy_ifeval", "instruction")}[
        category]
    items = sample_unique(lambda r: make(r), n, rng, key=lambda t: t[0])
    return [{"category": category, "benchmark": benchmark, "verifier": verifier, "messages": user(prompt),
             "reference": _target(category, answer), **cols} for prompt, answer, cols in items]


def _maker(world: World, category: str, split: str) -> Callable[[random.Random], Task]:
    if category == "reasoning":
        return lambda r: _reasoning(world, split, r)
    people = world.train_people if split == "train" else world.heldout_people
    return lambda r: _instruction(world, people, r)

