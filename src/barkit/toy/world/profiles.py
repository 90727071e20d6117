"""Sizes of the toy world as data: one frozen record per profile, looked up by name."""

from __future__ import annotations

from dataclasses import dataclass

from barkit.errors import BarkitError


@dataclass(frozen=True)
class WorldProfile:
    """How big each part of the toy world is; every count is a number of JSONL rows unless named otherwise."""

    name: str
    people: int  # entities with facts; tiny models memorise ~100-200 facts in a minute or two
    knowledge_heldout: int  # people whose facts appear in prose only; their QA is the knowledge eval
    cities: int
    countries: int
    orgs: int
    pretrain_rows: int
    general_sft_rows: int  # split evenly over knowledge / reasoning / chat
    domain_sft_rows: int  # per domain: math, code, tool_use, safety
    midtrain_rows: int  # per domain: math, code
    rl_rows: int  # per domain: math, code
    eval_items: int  # per category
    math_b_digits: int  # 1: 2-digit +/- 1-digit; 2: 2-digit +/- 2-digit
    vocab_size: int  # tokenizer size at which every entity name is one token, with or without a leading space
    # "23 + 5 = 28" or "23+5=28": the compact form puts a result digit's operands 1-4 tokens back, where the
    # quick base's operand heads look (recipe.operand_heads)
    math_notation: str = "spaced"
    # math midtrain and SFT rows = this x the domain's counts: with 400 SFT rows the quick math expert
    # memorised its problems (99% of training digits right, 17.5 on unseen sums); with 1,600, 42.5
    math_rows_scale: int = 1


PROFILES: dict[str, WorldProfile] = {
    "quick": WorldProfile(
        name="quick", people=40, knowledge_heldout=16, cities=10, countries=4, orgs=8,
        pretrain_rows=4000, general_sft_rows=900, domain_sft_rows=400, midtrain_rows=1000, rl_rows=200,
        eval_items=80, math_b_digits=1, vocab_size=1280, math_notation="compact", math_rows_scale=4,
    ),
    "default": WorldProfile(
        name="default", people=96, knowledge_heldout=40, cities=16, countries=6, orgs=12,
        pretrain_rows=16000, general_sft_rows=3000, domain_sft_rows=1600, midtrain_rows=4000, rl_rows=800,
        eval_items=128, math_b_digits=1, vocab_size=1536,
    ),
}


def get_profile(name: str) -> WorldProfile:
    """Look a profile up by name, failing with the known names.

    >>> get_profile("quick").eval_items
    80
    """
    if name not in PROFILES:
        raise BarkitError(f"world profile {name!r}: unknown; choose one of {sorted(PROFILES)}")
    return PROFILES[name]
