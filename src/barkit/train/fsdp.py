"""FSDP2 from barkit's own loop: every decoder layer is its own `fully_shard` unit and every expert (and
router) tensor is split on dim 1, so each rank holds an even slice of *every* expert.

FSDP2's default `Shard(0)` would split a `[2, ...]` expert tensor as expert 0 on rank 0 and expert 1 on
rank 1, nothing elsewhere (and every rank would still allocate a padded full expert); accelerate's FSDP2
plugin passes no shard placement, and `accelerate launch` with an FSDP config on a CPU host silently runs
DDP. So barkit shards the model itself, with a mixed-precision policy (compute dtype, fp32 reduction),
optional activation checkpointing, and the anchor's rows split off before sharding (they are sharded too,
but have no gradient and no optimizer state).

`FSDPRuntime` offers the subset of accelerate's `Accelerator` that the loop and the objectives use, so they
run unchanged under both. Launch with `torchrun` (or `accelerate launch` with a plain multi-process config);
on CPU the process group uses gloo.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard

from barkit.arch import ArchSpec
from barkit.train.trainable import memory_templates, stock_name

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _init_process_group() -> None:
    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "WORLD_SIZE" not in os.environ:  # one process, not launched by torchrun: an in-memory store, no port to share
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=timedelta(minutes=30))
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group(backend, timeout=timedelta(minutes=30))


def leave_process_group_at_exit() -> None:
    """Destroy the process group (if any) while the interpreter is still whole: a gloo group alive at exit can
    abort its process ("terminate called without an active exception", pytorch/pytorch#190489) after the
    run's outputs are written, and that fails the whole launch. Registered once however often it is called."""
    atexit.unregister(_destroy_process_group)
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class FSDPRuntime:
    """Rank, world size, device and the collectives, for a model sharded with FSDP2."""

    sharded = True

    def __init__(self):
        _init_process_group()
        self.process_index, self.num_processes = dist.get_rank(), dist.get_world_size()
        self.is_main_process = self.process_index == 0
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", self.process_index))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        self.distributed_type = "FSDP2"

    def wait_for_everyone(self) -> None:
        dist.barrier()

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def gather_object(self, items: list) -> list:
        out: list = [None] * self.num_processes
        dist.all_gather_object(out, items)
        return [x for part in out for x in part]

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module):
        """Accumulate gradients locally: no reduce-scatter until the last micro-batch."""
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if isinstance(norm, DTensor) else norm


def expert_placement(model: torch.nn.Module, spec: ArchSpec | None):
    """`shard_placement_fn`: expert and router tensors (and their split pieces) on dim 1, the rest default."""
    globs = list(memory_templates(spec).values()) if spec is not None else []
    experts = {id(p) for name, p in model.named_parameters()
               if any(fnmatch.fnmatchcase(stock_name(name), g) for g in globs)}
    return lambda param: Shard(1) if id(param) in experts else None


def checkpoint_layers(model: torch.nn.Module) -> None:
    """Activation checkpointing of every decoder layer's `forward`, not its `__call__`: module hooks (FSDP2's
    all-gather and mixed-precision input cast) stay outside the checkpoint, so the backward pass's recomputation
    sees the same bf16 inputs as the forward. transformers before 5.23 checkpoints `__call__`, and with FSDP2 +
    bf16 its recomputation ran on fp32 inputs (`CheckpointError` at the first backward, measured with 5.17 on
    an H200; pytorch/pytorch#150140). Non-reentrant, so frozen parameters and keyword inputs are fine."""
    from torch.utils.checkpoint import checkpoint

    for layer in model.model.layers:
        def forward(*args, _forward=layer.forward, _layer=layer, **kwargs):
            if not (_layer.training and torch.is_grad_enabled()):
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        layer.forward = forward
        layer.barkit_checkpointed = True


def shard_model(model: torch.nn.Module, spec: ArchSpec | None, compute_dtype: torch.dtype | None,
                checkpointing: bool) -> torch.nn.Module:
    """Shard in place: each decoder layer, then the root (embeddings, final norm, lm_head)."""
    if checkpointing:
        checkpoint_layers(model)
    for layer in model.model.layers:
        shard_unit(layer, model, spec, compute_dtype)
    shard_unit(model, model, spec, compute_dtype)
    return model


def shard_unit(unit: torch.nn.Module, model: torch.nn.Module, spec: ArchSpec | None,
               compute_dtype: torch.dtype | None) -> None:
    """`fully_shard` one unit (a decoder layer, or the root last) as every barkit FSDP run does: computing in
    `compute_dtype`, reducing gradients in fp32, expert weights sharded along their expert rows."""
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    fully_shard(unit, mp_policy=policy, shard_placement_fn=expert_placement(model, spec))


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter gathered whole on the main process (others get {}), on CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
