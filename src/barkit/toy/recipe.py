"""The toy-world recipe as data: model shape and step budgets per profile for every phase of the demo.

Budgets are in optimizer steps, not seconds, so runs are reproducible on machines whose speed varies.
Learning rates are the tiny-model ones (~1e-3..3e-3, see docs/design.md), not BAR's 7B values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from barkit.errors import BarkitError


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 256
    rope_theta: float = 500000.0  # Olmo 2 7B's value; it also leaves slow RoPE pairs for the copy circuit


@dataclass(frozen=True)
class Budget:
    steps: int
    lr: float
    batch_size: int = 32


@dataclass(frozen=True)
class RLBudget(Budget):
    prompts_per_step: int = 8
    num_generations: int = 8
    max_new_tokens: int = 24


@dataclass(frozen=True)
class Recipe:
    shape: ModelShape
    seq_len: int
    pretrain: Budget
    anchor_sft: Budget
    midtrain: Budget
    sft: Budget
    rl: RLBudget
    router: Budget
    router_fraction: float = 0.05
    # Start the base from a hand-wired induction circuit (world/circuits.py): a tiny model does not grow one
    # in its pretraining budget, and BAR's experts need the anchor to copy from context, as real ones do.
    copy_circuit: bool = True
    # Also wire three layer-0 heads that line up a sum's operands (world/circuits.py): the quick base does not
    # learn to in 150 steps, and without them its math expert memorises problems instead of learning digits.
    # Needs the profile's compact math notation.
    operand_heads: bool = False
    general_ratio: float = 0.3  # share of general chats mixed into each domain's SFT (BAR mixes them)
    # lr multiplier for the shared tensors a domain stage unfreezes (embeddings, lm_head; attention and norms
    # in RL). BAR's 7B lr (1e-4) barely moves them; at the toy lr (2e-3) SFT moved embeddings by ~35% and
    # lm_head by ~70%, and compose's mean blurs such deltas. Both profiles use 0.1 (see there).
    shared_lr_scale: float = 1.0
    # Router loss weight in the domain stages that take it (midtrain, sft): domain tokens -> expert 1, general
    # tokens -> the anchor (StageConfig.route_supervision). 0 is BAR as published.
    route_supervision: float = 0.0
    # How compose merges the shared tensors (ComposeConfig.shared): "mean" is BAR as published.
    compose_shared: str = "mean"
    # Which BAR stages each domain goes through (docs/design.md).
    domain_stages: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "math": ("midtrain", "sft", "rl"), "code": ("midtrain", "sft", "rl"),
        "tool_use": ("sft",), "safety": ("sft",)})
    # Math is the slowest skill to learn (docs/design.md): it gets more steps in every stage.
    domain_step_scale: dict[str, float] = field(default_factory=lambda: {"math": 2.0})
    eval_max_new_tokens: int = 64
    eval_limit: int | None = None  # items per benchmark (None: the whole held-out suite)
    data_profile: str | None = None  # the toy-world data profile (default: the recipe's own name)


RECIPES: dict[str, Recipe] = {
    "quick": Recipe(
        # hidden 128 (FFN 352) from the width study (docs/results.md): the best linear router's leak falls
        # from 12.8% at 96 to 10.6% and seed 0's routed gaps with it (code -21.3 -> -4.2, tool use -38.7 ->
        # -27.5), in 4.3 min against 3.0, inside the 5-min target; 192 would take 6.7 min.
        shape=ModelShape(hidden=128, layers=3, heads=4, kv_heads=4, intermediate=352),
        seq_len=128,
        pretrain=Budget(steps=150, lr=3e-3),
        anchor_sft=Budget(steps=100, lr=2e-3),
        midtrain=Budget(steps=20, lr=2e-3),
        # batch 16: twice the updates for the same tokens (at lr 2e-3: tool use 51.2 after 520 x 16 against
        # 23.8 after 260 x 32, the same compute; safety 81.2 after 260 x 16, 78.8 after 130 x 32)
        sft=Budget(steps=260, lr=3e-3, batch_size=16),
        rl=RLBudget(steps=8, lr=5e-5, prompts_per_step=4),
        # this recipe's composed MoE, seed 0 (routed chat / tool use): lr 1e-2 on a 25% sample for 300 steps
        # 61.3 / 48.8, on 50% 73.8 / 41.2; lr 2e-2 on 50% for 200 steps 73.8 / 46.2 (code 96.2)
        router=Budget(steps=200, lr=2e-2),
        router_fraction=0.5,
        # as in the default profile: compose's mean then dilutes less of each expert's shared-tensor skill
        # (at x1 the anchor + tool expert alone keep 38.8 of the expert's 51.2; routed 23.8-35.0, at x0.1 46.2)
        shared_lr_scale=0.1,
        operand_heads=True,
        # quick shows every phase inside the 5-min target. Math gets twice the steps, as in the default profile
        # (one-hot operand heads, seed 0: 17.5 at x1, 42.5 at x2); tool use needs 520 SFT steps (0.0 after
        # 65 x 32), safety 390 (+35 over the anchor). Every evaluation item counts (80 per category: one SE
        # <= 5.6 points).
        domain_step_scale={"math": 2.0, "tool_use": 2.0, "safety": 1.5},
        eval_max_new_tokens=48,
    ),
    "default": Recipe(
        # hidden 192 (FFN 576; was 128 / 384) from the width study (docs/results.md): the leak no linear router
        # avoids falls with width. 20.6-21.1 min from scratch on 2 cores (30-min target); mean over seeds 0-2,
        # routed gap to each expert: math -7.8 (seed 0 at 128: -16.4), tool use -8.1 (-11.7), code -0.8 (-3.1),
        # safety 0.0 (-3.2); chat -7.0 below the anchor (-2.4).
        shape=ModelShape(hidden=192, layers=4, heads=4, kv_heads=4, intermediate=576),
        seq_len=128,
        # (measured at hidden 128:) 600 steps (0.47-0.56 s each) make the world build 5.3-6.3 min on 2 shared
        # cores against a 5-min target. 450 steps built it in 4.1 min with a better anchor (knowledge 32.5 ->
        # 45.8) but weaker experts (2x math 86.7 -> 60.2, tool 78.1 -> 34.4): the experts are what the demo is
        # about.
        pretrain=Budget(steps=600, lr=3e-3),
        anchor_sft=Budget(steps=250, lr=2e-3),
        midtrain=Budget(steps=60, lr=2e-3),
        sft=Budget(steps=400, lr=2e-3),
        # RL unfreezes every shared tensor: at 2e-4 math's train reward fell from ~0.6 to ~0.3 and held-out
        # reward from 0.453 to 0.391 (eval 48.4 after SFT -> 38.3); at 5e-5 it held (0.469, eval 52.3).
        rl=RLBudget(steps=20, lr=5e-5),
        # Router-only training on one composed MoE (copy-circuit world, seed 0, shared lr x0.1): at lr 2e-3,
        # 300 steps gave overall 70.2 (math 64.1, tool 64.1, chat 89.8), a 30% sample instead of 10% 70.6; at
        # lr 1e-2 72.7 (math 71.9, tool 68.0, chat 96.1), 600 steps 72.7, lr 3e-2 72.8 (chat 90.6). 2,560
        # parameters take a far larger lr than the experts' 2e-3; BAR's 1e-4 is its 7B SFT lr. At hidden 192 (three
        # seeds, docs/results.md "Router budget at 192") 1000 steps on a 50% sample close routed math -7.8 -> -3.6
        # and chat -7.0 -> -2.1 for ~4 more minutes; kept at 300 until a fresh 3-seed table replaces the README's.
        router=Budget(steps=300, lr=1e-2),
        router_fraction=0.1,
        # Same world (copy circuit), same budgets, shared lr x1 -> x0.1: the 2x experts hold or gain (math
        # 85.9 -> 86.7, tool 73.4 -> 78.1, code 100, safety 89.1) and the routed MoE keeps more of them (overall
        # 68.8 -> 70.2, math 48.4 -> 64.1, tool 55.5 -> 64.1). Without the circuit x0.1 cost tool its format.
        shared_lr_scale=0.1,
    ),
}


# "smoke" runs every code path of the demo in about a minute, for end-to-end tests; it learns nothing.
RECIPES["smoke"] = Recipe(
    shape=ModelShape(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64),
    seq_len=96,
    pretrain=Budget(steps=6, lr=3e-3, batch_size=8),
    anchor_sft=Budget(steps=4, lr=3e-3, batch_size=8),
    midtrain=Budget(steps=2, lr=3e-3, batch_size=8),
    sft=Budget(steps=2, lr=3e-3, batch_size=8),
    rl=RLBudget(steps=1, lr=2e-4, batch_size=8, prompts_per_step=2, num_generations=2, max_new_tokens=8),
    router=Budget(steps=2, lr=3e-3, batch_size=8),
    eval_max_new_tokens=12,
    eval_limit=4,  # safety: two harmful and two benign prompts (a limit takes both kinds in turn): both rates exist
    data_profile="quick",
    copy_circuit=False,  # two heads are too few for the circuit's four residual blocks
)


def stage_budget(recipe: Recipe, domain: str, stage: str) -> Budget:
    """The stage's budget, with the domain's step multiplier applied."""
    budget = getattr(recipe, stage)
    scale = recipe.domain_step_scale.get(domain, 1.0)
    return dataclasses.replace(budget, steps=max(1, round(budget.steps * scale)))


def get_recipe(profile: str) -> Recipe:
    if profile not in RECIPES:
        raise BarkitError(f"profile '{profile}': unknown; choose one of {sorted(RECIPES)}")
    return RECIPES[profile]
