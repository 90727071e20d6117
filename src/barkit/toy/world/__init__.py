"""The toy world: a seeded fictional world with pretraining, post-training and eval data, and its tokenizer.

`generate_world(data_dir, profile, seed)` writes the data files; `train_tokenizer(data_dir, out_dir,
vocab_size)` trains the matching tokenizer. The tokenizer is imported lazily (transformers is slow to load).
"""

from __future__ import annotations

from typing import Any

from barkit.toy.world.generate import GENERATOR_VERSION, generate_world
from barkit.toy.world.profiles import PROFILES, WorldProfile, get_profile

__all__ = ["GENERATOR_VERSION", "PROFILES", "WorldProfile", "generate_world", "get_profile", "train_tokenizer"]


def __getattr__(name: str) -> Any:
    if name == "train_tokenizer":
        from barkit.toy.world.tokenizer import train_tokenizer

        return train_tokenizer
    raise AttributeError(f"module 'barkit.toy.world' has no attribute {name!r}")
