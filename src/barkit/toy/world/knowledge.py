"""Knowledge: prose about the world's entities (the facts' only source) and question answering over them.

Every fact is written in several paraphrases so the base model learns the fact, not one sentence.
QA about the held-out people never appears in training; their facts live in prose only, so the knowledge
eval measures transfer from prose, as PopQA-style benchmarks do.
"""

from __future__ import annotations

import random

from barkit.toy.world.entities import Person, World, with_article
from barkit.toy.world.rows import answer_is, chat, take, user

PERSON_PROSE = {
    "city": ("{s} lives in {o}.", "{s} has a home in {o}.", "{s} lives in the city of {o}.",
             "The city of {o} is home to {s}."),
    "job": ("{s} works as {a}.", "{s} is {a}.", "By trade, {s} is {a}."),
    "org": ("{s} works for {o}.", "{s} is employed by {o}.", "{s} has a job at {o}."),
}
CITY_PROSE = ("{s} is a city in {o}.", "{s} lies in {o}.", "The city of {s} is in {o}.")
CAPITAL_PROSE = ("The capital of {s} is {o}.", "{o} is the capital of {s}.", "{s} has its capital in {o}.")
ORG_CITY_PROSE = ("{s} is based in {o}.", "{s} has its main office in {o}.")
ORG_PRODUCT_PROSE = ("{s} makes {o}.", "{s} is a company that makes {o}.")

PERSON_QUESTIONS = {
    "city": ("Where does {s} live?", "In which city does {s} live?"),
    "job": ("What is {s}'s job?", "What does {s} do for a living?"),
    "org": ("Who does {s} work for?", "Which company does {s} work for?"),
}
PLACE_QUESTIONS = {
    "country": ("Which country is {s} in?", "In which country is {s}?"),
    "capital": ("What is the capital of {s}?", "Which city is the capital of {s}?"),
    "org_city": ("Where is {s} based?", "In which city is {s} based?"),
    "product": ("What does {s} make?", "What does the company {s} make?"),
}

QA = tuple[str, str, tuple[str, ...]]  # question, answer, aliases


def person_value(person: Person, relation: str) -> str:
    return {"city": person.city, "job": person.job, "org": person.org}[relation]


def person_sentence(person: Person, relation: str, rng: random.Random) -> str:
    """One fact about a person in a random paraphrase."""
    value = person_value(person, relation)
    template = rng.choice(PERSON_PROSE[relation])
    return template.format(s=person.name, o=value, a=with_article(value))


def _person_doc(world: World, person: Person, rng: random.Random) -> str:
    relations = list(PERSON_PROSE)
    rng.shuffle(relations)
    sentences = [person_sentence(person, r, rng) for r in relations]
    if rng.random() < 0.3:
        sentences.append(rng.choice(CITY_PROSE).format(s=person.city, o=world.city(person.city).country))
    return " ".join(sentences)


def _city_doc(world: World, index: int, rng: random.Random) -> str:
    city = world.cities[index % len(world.cities)]
    sentences = [rng.choice(CITY_PROSE).format(s=city.name, o=city.country)]
    for country in world.countries:
        if country.capital == city.name:
            sentences.append(rng.choice(CAPITAL_PROSE).format(s=country.name, o=city.name))
    residents = [p for p in world.people if p.city == city.name]
    if residents:
        sentences.append(PERSON_PROSE["city"][0].format(s=rng.choice(residents).name, o=city.name))
    return " ".join(sentences)


def _org_doc(world: World, index: int, rng: random.Random) -> str:
    org = world.orgs[index % len(world.orgs)]
    sentences = [rng.choice(ORG_CITY_PROSE).format(s=org.name, o=org.city),
                 rng.choice(ORG_PRODUCT_PROSE).format(s=org.name, o=org.product)]
    rng.shuffle(sentences)
    staff = [p for p in world.people if p.org == org.name]
    if staff:
        sentences.append(PERSON_PROSE["org"][1].format(s=rng.choice(staff).name, o=org.name))
    return " ".join(sentences)


def prose_docs(world: World, n: int, rng: random.Random) -> list[str]:
    """n short documents, round-robin over entities so every person gets the same number of paraphrases."""
    docs: list[str] = []
    for i in range(n):
        kind = i % 10
        if kind < 7:
            docs.append(_person_doc(world, world.people[(i // 10 * 7 + kind) % len(world.people)], rng))
        elif kind < 9:
            docs.append(_city_doc(world, i // 10 * 2 + kind - 7, rng))
        else:
            docs.append(_org_doc(world, i // 10, rng))
    return docs


def person_qa(people: tuple[Person, ...] | list[Person]) -> list[QA]:
    """Every (question template, person, relation) combination; the job also accepts 'a baker'."""
    out: list[QA] = []
    for person in people:
        for relation, templates in PERSON_QUESTIONS.items():
            value = person_value(person, relation)
            aliases = (with_article(value),) if relation == "job" else ()
            out.extend((t.format(s=person.name), value, aliases) for t in templates)
    return out


def place_qa(world: World) -> list[QA]:
    """Questions about cities, countries and companies (never held out: they anchor the QA format)."""
    out: list[QA] = []
    for city in world.cities:
        out.extend((t.format(s=city.name), city.country, ()) for t in PLACE_QUESTIONS["country"])
    for country in world.countries:
        out.extend((t.format(s=country.name), country.capital, ()) for t in PLACE_QUESTIONS["capital"])
    for org in world.orgs:
        out.extend((t.format(s=org.name), org.city, ()) for t in PLACE_QUESTIONS["org_city"])
        out.extend((t.format(s=org.name), org.product, ()) for t in PLACE_QUESTIONS["product"])
    return out


def training_qa(world: World) -> list[QA]:
    """All QA that training files may contain: never about held-out people."""
    return person_qa(world.train_people) + place_qa(world)


def pretrain_qa_texts(world: World, n: int, rng: random.Random) -> list[str]:
    """QA as plain text for the pretraining mix (QA seen in pretraining transfers to prose-only facts)."""
    return [f"Question: {q}\n{answer_is(a)}" for q, a, _ in take(training_qa(world), n, rng)]


def sft_rows(world: World, n: int, rng: random.Random) -> list[dict]:
    """Knowledge rows of the general SFT set, answered "The answer is X." (exact match reads that span)."""
    return [{"messages": chat(q, answer_is(a)), "category": "knowledge"}
            for q, a, _ in take(training_qa(world), n, rng)]


def eval_items(world: World, n: int, rng: random.Random) -> list[dict]:
    """Questions about held-out people, one paraphrase per (person, relation)."""
    items: list[dict] = []
    for person in world.heldout_people:
        for relation, templates in PERSON_QUESTIONS.items():
            value = person_value(person, relation)
            item = {"category": "knowledge", "benchmark": "toy_knowledge", "verifier": "exact_match",
                    "messages": user(rng.choice(templates).format(s=person.name)), "answer": value,
                    "reference": answer_is(value)}
            if relation == "job":
                item["aliases"] = [with_article(value)]
            items.append(item)
    rng.shuffle(items)
    return items[:n]
