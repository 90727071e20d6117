"""Write the toy world's data files: pretraining text, general and domain post-training sets, held-out evals.

Everything is a pure function of (profile, seed): one `random.Random` stream per part, canonical JSON,
so the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from barkit.errors import BarkitError
from barkit.toy.world import arithmetic, coding, copying, general, knowledge, safety, tools
from barkit.toy.world.entities import World, build_world
from barkit.toy.world.files import jsonl_bytes, replace_dir, sha256
from barkit.toy.world.profiles import WorldProfile, get_profile
from barkit.toy.world.rows import rng_for

# 2: copy/recall texts in pretraining and a repeat task in the general SFT; 3: the quick profile's compact math
# notation and 4x math rows
GENERATOR_VERSION = "3"
PRETRAIN_SHARES = {"qa": 0.10, "math": 0.06, "code": 0.06, "copy": 0.12}  # the rest is prose about the entities
COPY_SFT_SHARE = 0.1  # of the general SFT rows, on top of the three even categories
EVAL_CATEGORIES = ("knowledge", "reasoning", "chat", "math", "code", "tool_use", "safety")


def pretrain_rows(world: World, profile: WorldProfile, seed: int) -> list[dict]:
    """Mostly prose; some plain-text QA, arithmetic and code so the base sees every domain a little, and
    copy/recall texts so it learns to repeat what its context says (see `copying`)."""
    n = profile.pretrain_rows
    counts = {part: round(share * n) for part, share in PRETRAIN_SHARES.items()}
    math_sums, _ = arithmetic.split_sums(profile, seed)
    names = tuple(p.name for p in world.train_people)
    texts = knowledge.prose_docs(world, n - sum(counts.values()), rng_for(seed, "pretrain-prose"))
    texts += knowledge.pretrain_qa_texts(world, counts["qa"], rng_for(seed, "pretrain-qa"))
    texts += arithmetic.text_rows(math_sums, names, counts["math"], rng_for(seed, "pretrain-math"),
                                  profile.math_notation)
    texts += coding.text_rows(coding.split_pairs(seed)["train"], counts["code"], rng_for(seed, "pretrain-code"))
    texts += copying.pretrain_texts(world, counts["copy"], rng_for(seed, "pretrain-copy"))
    rng_for(seed, "pretrain-order").shuffle(texts)
    return [{"text": t} for t in texts]


def general_sft_rows(world: World, profile: WorldProfile, seed: int) -> list[dict]:
    """The anchor's post-training mix: knowledge QA, reasoning, instruction following, repeating; no domain data."""
    n = profile.general_sft_rows // 3
    rows = knowledge.sft_rows(world, n, rng_for(seed, "sft-knowledge"))
    rows += general.sft_rows(world, "reasoning", n, rng_for(seed, "sft-reasoning"))
    rows += general.sft_rows(world, "chat", profile.general_sft_rows - 2 * n, rng_for(seed, "sft-chat"))
    rows += copying.sft_rows(world, round(COPY_SFT_SHARE * profile.general_sft_rows), rng_for(seed, "sft-copy"))
    rng_for(seed, "sft-order").shuffle(rows)
    return rows


def general_eval(world: World, profile: WorldProfile, seed: int) -> dict[str, list[dict]]:
    n = profile.eval_items
    return {
        "eval/knowledge.jsonl": knowledge.eval_items(world, n, rng_for(seed, "eval-knowledge")),
        "eval/reasoning.jsonl": general.eval_items(world, "reasoning", n, rng_for(seed, "eval-reasoning")),
        "eval/chat.jsonl": general.eval_items(world, "chat", n, rng_for(seed, "eval-chat")),
    }


def build_files(profile: WorldProfile, seed: int) -> dict[str, list[dict]]:
    """Every file's rows, keyed by path relative to the data dir; eval items get ids.

    Eval items also carry a `reference` completion (what the training targets would answer), so tests
    can check that every item is solvable under its verifier; `generate_world` does not write it.
    """
    world = build_world(profile, seed)
    files = {"pretrain.jsonl": pretrain_rows(world, profile, seed),
             "general_sft.jsonl": general_sft_rows(world, profile, seed)}
    files.update(general_eval(world, profile, seed))
    for domain in (arithmetic, coding, tools, safety):
        files.update(domain.build(world, profile, seed))
    for category in EVAL_CATEGORIES:
        for i, item in enumerate(files[f"eval/{category}.jsonl"]):
            item["id"] = f"{category}-{i:04d}"
    return dict(sorted(files.items()))


def _check_target(data_dir: Path) -> None:
    """Refuse to replace a directory that holds anything but an earlier generated world."""
    if data_dir.exists() and any(data_dir.iterdir()) and not (data_dir / "manifest.json").is_file():
        raise BarkitError(f"{data_dir}: exists, is not empty and has no manifest.json; refusing to replace it")


def generate_world(data_dir: Path, profile: str = "quick", seed: int = 0) -> dict:
    """Write every toy-world file into data_dir (replaced atomically); return {file: {rows, sha256}}."""
    prof = get_profile(profile)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise BarkitError(f"seed {seed!r}: must be an integer")
    data_dir = Path(data_dir)
    _check_target(data_dir)
    files = build_files(prof, seed)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.", dir=data_dir.parent))
    summary: dict[str, dict] = {}
    try:
        (tmp / "eval").mkdir()
        for name, rows in files.items():
            data = jsonl_bytes([{k: v for k, v in row.items() if k != "reference"} for row in rows])
            (tmp / name).write_bytes(data)
            summary[name] = {"rows": len(rows), "sha256": sha256(data)}
        manifest = {"generator": "barkit.toy.world", "generator_version": GENERATOR_VERSION, "profile": prof.name,
                    "profile_params": asdict(prof), "seed": seed, "files": summary}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        replace_dir(tmp, data_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
