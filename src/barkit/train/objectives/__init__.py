"""Training objectives by name. To add one: a module with an `Objective` subclass, and an entry here."""

from __future__ import annotations

from barkit.errors import BarkitError
from barkit.train.objectives.base import Objective, TrainContext
from barkit.train.objectives.distill import DistillObjective
from barkit.train.objectives.grpo import GRPOObjective, HFRollout
from barkit.train.objectives.lm import LMObjective

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (LMObjective, GRPOObjective, DistillObjective)}


def get_objective(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise BarkitError(f"config key 'objective': unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


__all__ = ["OBJECTIVES", "HFRollout", "Objective", "TrainContext", "get_objective"]
