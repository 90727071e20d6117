"""Tool-use domain: pick 1 of 2-4 offered tools and fill its arguments, BFCL-style.

Calls are written as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; two blocks for parallel
requests; a fixed sentence when no offered tool fits. Eval requests use amounts and alarm times never
seen in training, and (tool, city) and (name, message) pairings never seen in training.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from barkit.toy.world.entities import World
from barkit.toy.world.profiles import WorldProfile
from barkit.toy.world.rows import chat, rng_for, sample_unique, split, user

NO_CALL = "None of the available tools can do that."
TEXTS = ("hello", "I am late", "see you soon", "call me back", "good night")
CURRENCIES = ("euros", "yen", "pounds", "pesos")
FOODS = ("pizza", "noodle", "fish", "soup", "curry")


def _spec(tool: str, description: str, **params: dict) -> dict:
    return {"name": tool, "description": description,
            "parameters": {"type": "object", "properties": params, "required": list(params)}}


STR, INT = {"type": "string"}, {"type": "integer"}
TOOLS = {
    "get_weather": _spec("get_weather", "Get the weather in a city.", city=STR),
    "get_time": _spec("get_time", "Get the local time in a city.", city=STR),
    "set_alarm": _spec("set_alarm", "Set an alarm.", hour=INT, minute=INT),
    "send_message": _spec("send_message", "Send a text message.", name=STR, text=STR),
    "convert_currency": _spec("convert_currency", "Convert dollars to a currency.", amount=INT,
                              currency={"type": "string", "enum": list(CURRENCIES)}),
    "find_restaurant": _spec("find_restaurant", "Find a restaurant.", city=STR,
                             food={"type": "string", "enum": list(FOODS)}),
}
REQUESTS = {
    "get_weather": ("What is the weather in {city}?", "Tell me the weather in {city}."),
    "get_time": ("What time is it in {city}?", "Tell me the local time in {city}."),
    "set_alarm": ("Set an alarm for {hour}:{minute:02d}.", "Wake me up at {hour}:{minute:02d}."),
    "send_message": ('Send {name} the message "{text}".', 'Text {name}: "{text}".'),
    "convert_currency": ("Convert {amount} dollars to {currency}.", "How much is {amount} dollars in {currency}?"),
    "find_restaurant": ("Find a {food} restaurant in {city}.", "Where can I eat {food} in {city}?"),
}
CITY_TOOLS = ("get_weather", "get_time", "find_restaurant")
PARALLEL_REQUESTS = {
    "get_weather": "What is the weather in {city} and in {city2}?",
    "get_time": "What time is it in {city} and in {city2}?",
}


@dataclass(frozen=True)
class Pools:
    """Argument values one split may use; city tools map to the cities allowed with them."""

    cities: dict[str, tuple[str, ...]]
    messages: tuple[tuple[str, str], ...]  # (name, text)
    amounts: tuple[int, ...]
    times: tuple[tuple[int, int], ...]


def _pools(world: World, seed: int) -> dict[str, Pools]:
    """Train/eval argument values. Numbers and times are held out outright (digits copy well). Cities and
    names are world words (one token each) held out per pairing: each eval city is never used with its eval
    tool in training, but is copied in other tools' requests; each eval (name, text) message is new. With
    cities held out outright a tiny model memorises the dozen training cities instead of copying."""
    rng = rng_for(seed, "tools-split")
    cities = [c.name for c in world.cities]
    rng.shuffle(cities)
    k = max(3, len(cities) // 5)  # held-out cities per tool (disjoint across tools)
    held = {tool: cities[i * k:(i + 1) * k] for i, tool in enumerate(CITY_TOOLS)}
    names = world.people_names("train")
    msg_train, msg_eval = split([(n, t) for n in names for t in TEXTS], len(names) * len(TEXTS) // 4, rng)
    amount_train, amount_eval = split(range(10, 1000), 198, rng)
    times = [(h, m) for h in range(1, 13) for m in (0, 15, 30, 45)]
    time_train, time_eval = split(times, len(times) // 4, rng)
    return {
        "train": Pools({t: tuple(c for c in cities if c not in held[t]) for t in CITY_TOOLS}, tuple(msg_train),
                       tuple(amount_train), tuple(time_train)),
        "eval": Pools({t: tuple(held[t]) for t in CITY_TOOLS}, tuple(msg_eval), tuple(amount_eval),
                      tuple(time_eval)),
    }


def _arguments(tool: str, pools: Pools, rng: random.Random) -> dict:
    hour, minute = rng.choice(pools.times)
    name, text = rng.choice(pools.messages)
    city = rng.choice(pools.cities[tool]) if tool in CITY_TOOLS else ""
    values = {"city": city, "name": name, "text": text, "amount": rng.choice(pools.amounts),
              "currency": rng.choice(CURRENCIES), "food": rng.choice(FOODS), "hour": hour, "minute": minute}
    return {key: values[key] for key in TOOLS[tool]["parameters"]["properties"]}


def call_text(tool: str, arguments: dict) -> str:
    """One call in the completion format.

    >>> call_text("get_time", {"city": "Miro"})
    '<tool_call>{"name": "get_time", "arguments": {"city": "Miro"}}</tool_call>'
    """
    return f"<tool_call>{json.dumps({'name': tool, 'arguments': arguments})}</tool_call>"


def _offer(needed: list[str], excluded: str | None, rng: random.Random) -> list[dict]:
    """2-4 tools in random order: the needed ones plus distractors."""
    others = [t for t in TOOLS if t not in needed and t != excluded]
    n_total = rng.randint(max(2, len(needed)), 4)
    names = needed + rng.sample(others, n_total - len(needed))
    rng.shuffle(names)
    return [TOOLS[name] for name in names]


def _example(pools: Pools, rng: random.Random) -> tuple[str, list[dict], str, list[dict]]:
    """(request, offered tools, reference answer, BFCL ground truth); 5/8 single, 2/8 parallel, 1/8 no call."""
    kind = rng.randrange(8)
    if kind < 5 or kind == 7:
        tool = rng.choice(sorted(TOOLS))
        args = _arguments(tool, pools, rng)
        request = rng.choice(REQUESTS[tool]).format(**args)
        if kind == 7:
            return request, _offer([], tool, rng), NO_CALL, []
        truth = [{tool: {k: [v] for k, v in args.items()}}]
        return request, _offer([tool], None, rng), call_text(tool, args), truth
    tool = rng.choice(sorted(PARALLEL_REQUESTS))
    city, city2 = rng.sample(pools.cities[tool], 2)
    request = PARALLEL_REQUESTS[tool].format(city=city, city2=city2)
    answer = "\n".join(call_text(tool, {"city": c}) for c in (city, city2))
    return request, _offer([tool], None, rng), answer, [{tool: {"city": [c]}} for c in (city, city2)]


def _examples(pools: Pools, n: int, rng: random.Random, repeats: bool) -> list[tuple]:
    return sample_unique(lambda r: _example(pools, r), n, rng, key=lambda t: t[0], allow_repeats=repeats)


def build(world: World, profile: WorldProfile, seed: int) -> dict[str, list[dict]]:
    """tool_use_sft rows and the tool_use eval items."""
    pools = _pools(world, seed)
    sft = _examples(pools["train"], profile.domain_sft_rows, rng_for(seed, "tools-sft"), True)
    ev = _examples(pools["eval"], profile.eval_items, rng_for(seed, "tools-eval"), False)
    return {
        "tool_use_sft.jsonl": [{"messages": chat(req, ans), "tools": tools, "domain": "tool_use"}
                               for req, tools, ans, _ in sft],
        "eval/tool_use.jsonl": [{"category": "tool_use", "benchmark": "toy_bfcl", "verifier": "tool_call",
                                 "messages": user(req), "tools": tools, "ground_truth": truth, "reference": ans}
                                for req, tools, ans, truth in ev],
    }
