"""`barkit world build`: data, tokenizer, a tiny pretrained Olmo 2 base and a post-trained anchor.

Each phase writes its own directory atomically and records what it was built from; a re-run with the same
arguments reuses every phase whose record matches, and rebuilds from the first one that does not.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from transformers import AutoTokenizer, Olmo2Config, Olmo2ForCausalLM

from barkit.checkpoint import write_json
from barkit.errors import BarkitError
from barkit.outputs import atomic_output_dir
from barkit.toy.recipe import Recipe, get_recipe
from barkit.toy.world.circuits import seed_copy_circuit, seed_operand_heads
from barkit.toy.world.generate import GENERATOR_VERSION, generate_world
from barkit.toy.world.profiles import get_profile
from barkit.toy.world.tokenizer import train_tokenizer
from barkit.train import CheckpointConfig, OptimConfig, ScheduleConfig, SequenceConfig, StageConfig, train

WORLD_MANIFEST = "world_manifest.json"
PHASES = ("data", "tokenizer", "base", "anchor")


@dataclass
class WorldConfig:
    out: str = field(metadata={"help": "world directory"})
    profile: Literal["quick", "default", "smoke"] = "quick"
    seed: int = 0
    progress: bool = True


def world_key(cfg: WorldConfig, recipe: Recipe) -> dict:
    """What the world depends on: a change to any of it rebuilds the affected phases."""

    return {"profile": cfg.profile, "seed": cfg.seed, "generator": GENERATOR_VERSION,
            "shape": asdict(recipe.shape), "seq_len": recipe.seq_len,
            "pretrain": asdict(recipe.pretrain), "anchor_sft": asdict(recipe.anchor_sft),
            "copy_circuit": recipe.copy_circuit, "operand_heads": recipe.operand_heads}


def _read_manifest(root: Path) -> dict:
    path = root / WORLD_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {"phases": {}}


def _valid(root: Path, phase: str, manifest: dict, key: dict) -> bool:
    record = manifest["phases"].get(phase)
    return bool(record) and record.get("key") == key and (root / phase).is_dir()


def init_dense_model(recipe: Recipe, tokenizer_dir: Path, out: Path, seed: int) -> Path:
    """A randomly initialised Olmo 2 model sized by the recipe (with the copy circuit and operand heads if the
    recipe asks), saved with the world tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    s = recipe.shape
    config = Olmo2Config(vocab_size=len(tokenizer), hidden_size=s.hidden, intermediate_size=s.intermediate,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                         max_position_embeddings=s.max_positions, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": s.rope_theta})
    torch.manual_seed(seed)
    model = Olmo2ForCausalLM(config)
    if recipe.copy_circuit:
        seed_copy_circuit(model, seed, positions=recipe.seq_len)
    if recipe.operand_heads:
        seed_operand_heads(model, tokenizer, positions=recipe.seq_len)
    with atomic_output_dir(out, overwrite=True) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return out


def _phase_data(cfg, root, recipe, progress):
    return generate_world(root / "data", recipe.data_profile or cfg.profile, cfg.seed)


def _phase_tokenizer(cfg, root, recipe, progress):
    with atomic_output_dir(root / "tokenizer", overwrite=True) as tmp:
        tok = train_tokenizer(root / "data", tmp, get_profile(recipe.data_profile or cfg.profile).vocab_size)
    return {"vocab_size": len(tok)}


def _phase_base(cfg, root, recipe, progress):
    init = init_dense_model(recipe, root / "tokenizer", root / ".base-init", cfg.seed)
    b = recipe.pretrain
    train(StageConfig(stage="pretrain", model=str(init), data=[str(root / "data" / "pretrain.jsonl")],
                      out=str(root / "base"), steps=b.steps, optim=OptimConfig(lr=b.lr), batch_size=b.batch_size,
                      sequences=SequenceConfig(seq_len=recipe.seq_len), seed=cfg.seed, progress=progress,
                      overwrite=True, checkpoint=CheckpointConfig(save_every=max(50, b.steps // 4), resume=True)))
    return {"steps": b.steps}


def _phase_anchor(cfg, root, recipe, progress):
    b = recipe.anchor_sft
    train(StageConfig(stage="sft", model=str(root / "base"), data=[str(root / "data" / "general_sft.jsonl")],
                      out=str(root / "anchor"), trainable=["all"], steps=b.steps, optim=OptimConfig(lr=b.lr),
                      batch_size=b.batch_size, sequences=SequenceConfig(seq_len=recipe.seq_len), seed=cfg.seed,
                      progress=progress, overwrite=True, schedule=ScheduleConfig(kind="cosine", warmup_ratio=0.05),
                      checkpoint=CheckpointConfig(save_every=max(50, b.steps // 4), resume=True)))
    return {"steps": b.steps}


PHASE_FUNCTIONS: dict[str, Callable] = {"data": _phase_data, "tokenizer": _phase_tokenizer,
                                        "base": _phase_base, "anchor": _phase_anchor}


def build_world(cfg: WorldConfig, log: Callable[[str], None] = print) -> Path:
    """Build (or reuse) every phase; returns the world directory."""
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    recipe = get_recipe(cfg.profile)
    manifest, key = _read_manifest(root), world_key(cfg, recipe)
    stale = False
    for phase in PHASES:
        if not stale and _valid(root, phase, manifest, key):
            log(f"world: {phase} up to date")
            continue
        stale = True  # every later phase depends on this one
        start = time.perf_counter()
        log(f"world: building {phase} ({cfg.profile} profile, seed {cfg.seed})")
        info = PHASE_FUNCTIONS[phase](cfg, root, recipe, cfg.progress)
        manifest["phases"][phase] = {"key": key, "seconds": round(time.perf_counter() - start, 2),
                                     "info": info if isinstance(info, dict) else {}}
        write_json(root / WORLD_MANIFEST, manifest)
    if not (root / "anchor").is_dir():
        raise BarkitError(f"{root}: world build did not produce an anchor")
    return root
