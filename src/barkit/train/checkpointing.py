"""Resumable training state in `<out>.ckpt/`: trainable tensors, optimizer, RNG states and the step.

The batch order and learning rate are pure functions of the step, so (weights, optimizer, RNG, step)
is the whole state: a run killed at any point and resumed from its last checkpoint replays the same
steps and ends bit-identical on CPU. Checkpoints are written to `step-N.tmp` and renamed when complete;
tensors go to safetensors, the optimizer's state dict through torch.save (read back with
weights_only=True). Frozen tensors are not stored: they are re-read from the parent checkpoint.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from barkit.checkpoint import write_json
from barkit.errors import BarkitError

_STEP_DIR = re.compile(r"^step-(\d+)$")
IDENTITY = "identity.json"


def work_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    found = [(int(m[1]), p) for p in root.glob("step-*") if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def _first_difference(old: dict, new: dict) -> str | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return key
    return None


def check(root: Path, identity: dict, resume: bool, overwrite: bool) -> bool:
    """Read-only checks of the work directory (run on every rank, so all fail alike). Returns whether its
    checkpoints are to be resumed; with `overwrite`, checkpoints of a different run are discarded instead
    of refused."""
    if not root.exists():
        return False
    if not resume:
        if not overwrite:
            raise BarkitError(f"{root}: checkpoints of an earlier run exist; pass --resume true to continue "
                              "it or --overwrite true to start over")
        return False
    recorded = root / IDENTITY
    key = _first_difference(json.loads(recorded.read_text()), json.loads(json.dumps(identity))) \
        if recorded.is_file() else None
    if key is not None and not overwrite:
        raise BarkitError(f"{root}: cannot resume: '{key}' differs from the interrupted run "
                          "(pass --overwrite true to discard its checkpoints)")
    return key is None


def reset(root: Path, identity: dict, keep: bool) -> None:
    """Main process only: start a fresh work directory (or keep the resumable one), drop torn checkpoints."""
    if root.exists() and not keep:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    write_json(root / IDENTITY, identity)


def latest(root: Path) -> Path | None:
    found = checkpoints(root)
    return found[-1][1] if found else None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(root: Path, step: int, model: torch.nn.Module, optimizer, accelerator, state: dict, keep: int) -> Path:
    """Write step-N atomically (every rank adds its RNG state); keep the newest `keep` checkpoints."""
    tmp, final = root / f"step-{step:06d}.tmp", root / f"step-{step:06d}"
    if accelerator.is_main_process:
        tmp.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / "state.json", {**state, "step": step, "world_size": accelerator.num_processes})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp.rename(final)
        for _, old in checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(ckpt: Path, model: torch.nn.Module, optimizer, accelerator) -> dict:
    """Restore trainable tensors, optimizer and this rank's RNG; return the saved state (with `step`)."""
    state = json.loads((ckpt / "state.json").read_text())
    if state["world_size"] != accelerator.num_processes:
        raise BarkitError(f"{ckpt}: written by {state['world_size']} processes, resuming with "
                          f"{accelerator.num_processes}")
    tensors = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    _set_rng_state(torch.load(ckpt / f"rng-{accelerator.process_index}.pt", weights_only=True))
    return state
