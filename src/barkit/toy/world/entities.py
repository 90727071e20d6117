"""The toy world's entities: invented people, cities, countries and companies with a few relations each.

Names are short invented words (one or two BPE tokens once the tokenizer is trained), because tiny models
learn facts about single-token names far faster than about multi-token ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from barkit.toy.world.profiles import WorldProfile
from barkit.toy.world.rows import rng_for, split

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
END_VOWELS = "aiou"  # no final "e": keeps names away from English words like "Kale" or "Dome"
CLUSTERS = ("nt", "rk", "ld", "st", "nd", "lv", "rb", "mp")
# Invented names must not be English words (or slurs) that readers or the templates would trip over.
NOT_NAMES = frozenset("""
lima polo solo tuna sofa soda kilo memo mama papa nana dada toga yoga bora coma data diva gala lava java
mega nova pita feta beta zeta meta puma saga soma tofu vida visa kiwi menu guru lulu mono silo demo limo
logo mini taxi zero halo judo sumo tutu veto dodo mojo bolo kudo tiki zulu gobi bali mali fiji peru luna
nazi paki dago pedo puta mofo
bonus minus virus focus lotus venus salon baton melon lemon demon satin robin cabin ramen tenor motor rotor
solar polar lunar sonar molar radar cedar sugar vapor manor minor donor timer tiger paper later water major
tumor rumor labor tutor vigor rigor valor lover never fever lever river rover cover diver liver giver sever
seven raven given woven risen siren women token taken woken laden bison boson pylon nylon felon talon tenon
tidal fatal vital total metal petal medal pedal modal nasal rival naval legal regal final tonal banal lapel
label rebel level bevel model motel hotel novel navel panel gavel camel refer defer fiber tuber rider sober
bases noses roses vases poses doses loses rises dunes tunes limes tamil rapid timid
delta kappa pasta fiesta vista manta santa canto lento tempo gusto pesto rasta tampa pampa pinto panto rondo
kendo mundo bambi dumbo
""".split())

JOBS = ("baker", "farmer", "doctor", "teacher", "pilot", "painter", "singer", "driver", "nurse", "writer",
        "tailor", "miner", "engineer", "artist")
PRODUCTS = ("bread", "ships", "toys", "shoes", "tea", "glass", "paper", "bikes", "lamps", "clocks")


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    job: str
    org: str


@dataclass(frozen=True)
class City:
    name: str
    country: str


@dataclass(frozen=True)
class Country:
    name: str
    capital: str


@dataclass(frozen=True)
class Org:
    name: str
    city: str
    product: str


@dataclass(frozen=True)
class World:
    """All entities plus the splits that keep evaluation held out from training."""

    people: tuple[Person, ...]
    cities: tuple[City, ...]
    countries: tuple[Country, ...]
    orgs: tuple[Org, ...]
    heldout_people: tuple[Person, ...]  # QA about them appears in eval only; no training chat names them
    train_people: tuple[Person, ...]

    def people_names(self, split: str) -> tuple[str, ...]:
        """Names a split may use: train people for training, held-out people for eval."""
        return tuple(p.name for p in (self.train_people if split == "train" else self.heldout_people))

    def city(self, name: str) -> City:
        return next(c for c in self.cities if c.name == name)

    def all_names(self) -> list[str]:
        """Every invented proper name: people, cities, countries, companies."""
        groups = (self.people, self.cities, self.countries, self.orgs)
        return [e.name for group in groups for e in group]


def _make_name(rng: random.Random, shape: str) -> str:
    parts = {
        "C": lambda: rng.choice(CONSONANTS), "V": lambda: rng.choice(VOWELS),
        "E": lambda: rng.choice(END_VOWELS), "N": lambda: rng.choice("nlrs"), "K": lambda: rng.choice(CLUSTERS),
    }
    return "".join(parts[ch]() if ch in parts else ch for ch in shape)


def draw_names(rng: random.Random, shape: str, n: int, taken: set[str]) -> list[str]:
    """n fresh names of a shape (C consonant, V vowel, E final vowel, N n/l/r/s, K cluster, else literal).

    Names are unique case-insensitively across everything in `taken`, which is updated.
    """
    out: list[str] = []
    while len(out) < n:
        word = _make_name(rng, shape)
        if word in taken or word in NOT_NAMES:
            continue
        taken.add(word)
        out.append(word)
    return out


def with_article(word: str) -> str:
    """'a baker' / 'an artist'.

    >>> with_article("engineer")
    'an engineer'
    """
    return ("an " if word[0] in "aeiou" else "a ") + word


def build_world(profile: WorldProfile, seed: int) -> World:
    """Draw every entity and relation of the world from the seed."""
    rng = rng_for(seed, "entities")
    taken: set[str] = set()
    country_names = [n.capitalize() for n in draw_names(rng, "CVCia", profile.countries, taken)]
    city_names = [n.capitalize() for n in draw_names(rng, "CVCVN", profile.cities, taken)]
    org_names = [n.capitalize() for n in draw_names(rng, "CVKE", profile.orgs, taken)]
    person_names = [n.capitalize() for n in draw_names(rng, "CVCE", profile.people, taken)]
    cities = tuple(City(name, country_names[i % len(country_names)]) for i, name in enumerate(city_names))
    countries = tuple(Country(name, city_names[i]) for i, name in enumerate(country_names))
    orgs = tuple(Org(name, rng.choice(city_names), rng.choice(PRODUCTS)) for name in org_names)
    people = tuple(
        Person(name, rng.choice(city_names), rng.choice(JOBS), rng.choice(org_names)) for name in person_names
    )
    train_people, heldout = split(people, profile.knowledge_heldout, rng_for(seed, "knowledge-split"))
    return World(
        people=people, cities=cities, countries=countries, orgs=orgs,
        heldout_people=tuple(sorted(heldout, key=lambda p: p.name)),
        train_people=tuple(sorted(train_people, key=lambda p: p.name)),
    )

