"""Resumable training state in `<out>.ckpt/`: trainable tensors, optimizer, RNG states and the step.

The batch order and learning rate are pure functions of the step, so (weights, optimizer, RNG, step)
is the whole state: a run killed at any point and resumed from its last checkpoint replays the same
steps and ends bit-identical on CPU. Checkpoints are written to `step-N.tmp` and renamed when complete.
Nothing is pickled: tensors (trainable weights, AdamW moments, RNG states) go to safetensors, everything
else to JSON. Replicated runs (one process, DDP) write one copy from the main process; sharded runs (FSDP)
write every rank's own shard, and resume with the same number of processes. Frozen tensors are not stored:
they are re-read from the parent checkpoint.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

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
            raise BarkitError(f"{root}: checkpoints of an earlier run exist; pass --checkpoint.resume true to continue "
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


def _rng_state() -> tuple[dict[str, torch.Tensor], list]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, words, gauss = random.getstate()
    return tensors, [version, list(words), gauss]


def _set_rng_state(tensors: dict[str, torch.Tensor], python: list) -> None:
    torch.set_rng_state(tensors["torch"])
    random.setstate((python[0], tuple(python[1]), python[2]))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.to_local() if isinstance(tensor, DTensor) else tensor).detach().cpu().contiguous()


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimizer's state as flat tensors (`INDEX.KEY`, this rank's shard) and its groups as JSON."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": _local(value) for index, entries in state["state"].items()
               for key, value in entries.items()}
    return tensors, state["param_groups"]


def _load_optimizer(optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of `_optimizer_tensors`; moments of sharded parameters become DTensors shaped like them."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        param = params[int(index)]
        if isinstance(param, DTensor) and value.dim() > 0:
            value = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements,
                                       shape=param.shape, stride=param.stride())
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save(root: Path, step: int, model: torch.nn.Module, optimizer, runtime, state: dict, keep: int) -> Path:
    """Write step-N atomically (every rank adds its RNG state); keep the newest `keep` checkpoints."""
    tmp, final = root / f"step-{step:06d}.tmp", root / f"step-{step:06d}"
    rank, sharded = runtime.process_index, getattr(runtime, "sharded", False)
    if runtime.is_main_process:
        tmp.mkdir(parents=True, exist_ok=True)
    runtime.wait_for_everyone()
    rng, python_rng = _rng_state()
    save_file(rng, str(tmp / f"rng-{rank}.safetensors"))
    write_json(tmp / f"rng-{rank}.json", {"python": python_rng})
    if sharded or runtime.is_main_process:
        part = f"-{rank}" if sharded else ""
        save_file({n: _local(p) for n, p in model.named_parameters() if p.requires_grad},
                  str(tmp / f"trainable{part}.safetensors"))
        tensors, groups = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / f"optimizer{part}.safetensors"))
        write_json(tmp / f"optimizer{part}.json", {"param_groups": groups})
    if runtime.is_main_process:
        write_json(tmp / "state.json", {**state, "step": step, "world_size": runtime.num_processes,
                                        "sharded": sharded})
    runtime.wait_for_everyone()
    if runtime.is_main_process:
        tmp.rename(final)
        for _, old in checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    runtime.wait_for_everyone()
    return final


def load(ckpt: Path, model: torch.nn.Module, optimizer, runtime) -> dict:
    """Restore trainable tensors, optimizer and this rank's RNG; return the saved state (with `step`)."""
    state = json.loads((ckpt / "state.json").read_text())
    sharded = getattr(runtime, "sharded", False)
    if state["world_size"] != runtime.num_processes or state.get("sharded", False) != sharded:
        raise BarkitError(f"{ckpt}: written by {state['world_size']} {'sharded ' if state.get('sharded') else ''}"
                          f"processes, resuming with {runtime.num_processes}{' sharded' if sharded else ''}")
    part = f"-{runtime.process_index}" if sharded else ""
    tensors = load_file(str(ckpt / f"trainable{part}.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            target = params[name].to_local() if isinstance(params[name], DTensor) else params[name]
            target.copy_(tensor)
    groups = json.loads((ckpt / f"optimizer{part}.json").read_text())["param_groups"]
    _load_optimizer(optimizer, load_file(str(ckpt / f"optimizer{part}.safetensors")), groups)
    python_rng = json.loads((ckpt / f"rng-{runtime.process_index}.json").read_text())["python"]
    _set_rng_state(load_file(str(ckpt / f"rng-{runtime.process_index}.safetensors")), python_rng)
    return state
