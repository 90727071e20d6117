"""Self-verification of written checkpoints, run before the output directory is renamed into place.

A peer tool's MoE output can silently load as something else (say a dense model with random MLPs);
barkit loads every output back with stock transformers and refuses it unless every weight was loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from barkit.checkpoint import CheckpointReader
from barkit.errors import BarkitError

FULL_VERIFY_MAX_BYTES = 4 * 10**9  # "auto" verification loads the model only below this size


def check_key_set(path: Path, expected: set[str]) -> None:
    written = set(CheckpointReader(path).keys())
    missing, unexpected = sorted(expected - written), sorted(written - expected)
    if missing or unexpected:
        raise BarkitError(f"{path}: written keys differ from the expected set "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_strict(path: Path, dtype: torch.dtype | None = torch.float32):
    """Load with stock transformers and fail if any weight was missing, unexpected or re-initialised."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model, info = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, output_loading_info=True,
                                                       use_safetensors=True, local_files_only=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise BarkitError(f"{path}: transformers did not load every weight: {problems}")
    return model.eval()


def loaded_config_matches(path: Path, source_config: dict, keys: tuple[str, ...]) -> None:
    """The saved config must keep rope, eps, token ids... of its source (FlexOlmo's defaults differ)."""
    from transformers import AutoConfig

    loaded = AutoConfig.from_pretrained(str(path), local_files_only=True).to_dict()
    for key in keys:
        if key in source_config and loaded.get(key) != source_config[key]:
            raise BarkitError(f"{path / 'config.json'}: '{key}' is {loaded.get(key)!r}, "
                              f"expected {source_config[key]!r} from the source model")


def should_load(path: Path, mode: str) -> bool:
    if mode in ("none", "keys"):
        return False
    if mode == "full":
        return True
    size = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
    return size <= FULL_VERIFY_MAX_BYTES


@torch.no_grad()
def max_logit_diff(model_a, model_b, vocab_size: int, seed: int = 0, batch: int = 2, length: int = 16) -> float:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, length), generator=gen)
    return (model_a(ids).logits.float() - model_b(ids).logits.float()).abs().max().item()
