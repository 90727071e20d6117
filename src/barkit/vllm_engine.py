"""vLLM as barkit's generation engine: rollouts for RL, evaluation and serving at real size.

The engine runs in vLLM's multi-process mode (its EngineCore in a child process): an in-process engine would
take over `torch.set_num_threads` and break HF's own forward for Olmo 2 / FlexOlmo in the trainer's process.
Prompts go in as token ids rendered by barkit's tokenizer, so vLLM and HF `generate` see the same tokens.

Weight sync (`push`, `push_trainable`) after an optimizer step: the trainable tensors are written under their
checkpoint names to one safetensors file in /dev/shm (multi-process mode moves tensors as files),
and barkit's worker extension (`WeightSync`) reloads them in place with vLLM's own `reload_weights`, which runs
every layer's post-load processing again (the CPU's oneDNN packing of linears; the CPU MoE prepack, which vLLM
skips on an update, is re-run here); then the prefix cache is reset, or a cached prompt would still answer with
the old weights. vLLM rebuilds a layer from what it is given, so the worker completes each touched layer
(`layer_closure`) with the frozen tensors read from the checkpoint on disk.

Pinned: the sync is tested with vllm 0.32.0 (constraints-vllm.txt); other versions may change the reload API,
so another version runs with a warning that says so.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from barkit.errors import BarkitError

TESTED_VLLM = "0.32.0"
INSTALL_HINT = "pip install 'barkit[vllm]' (its own venv: scripts/install.sh --vllm)"
_LAYER = re.compile(r"^(model\.layers\.\d+)\.")


def require_vllm():
    """The vllm module, or one line naming the extra to install."""
    try:
        import vllm
    except ImportError:
        raise BarkitError(f"generation engine 'vllm': vllm is not installed; {INSTALL_HINT}") from None
    return vllm


def on_cpu() -> bool:
    return not torch.cuda.is_available()


@dataclass
class Sample:
    """One generated sequence: its token ids (stop token included when it stopped) and the engine's
    log-probabilities of those tokens under its sampling distribution."""

    token_ids: list[int]
    logprobs: list[float]


def layer_closure(changed: Iterable[str], all_names: Iterable[str]) -> list[str]:
    """The names to push for `changed`: every tensor of each decoder layer that has a changed tensor (vLLM
    rebuilds a layer from what it receives), plus the changed tensors outside layers.

    >>> layer_closure(["model.layers.1.mlp.gate.weight"], ["model.layers.1.mlp.gate.weight",
    ...     "model.layers.1.self_attn.q_proj.weight", "model.layers.0.mlp.gate.weight", "lm_head.weight"])
    ['model.layers.1.mlp.gate.weight', 'model.layers.1.self_attn.q_proj.weight']
    """
    changed = set(changed)
    layers = {m.group(1) for n in changed if (m := _LAYER.match(n))}
    return sorted(n for n in all_names if n in changed or ((m := _LAYER.match(n)) and m.group(1) in layers))


class VLLMEngine:
    """A vLLM engine over one checkpoint directory; generate token ids, push new weights, close."""

    def __init__(self, path: str | Path, dtype: str = "float32", max_model_len: int | None = None,
                 kv_cache_bytes: int | None = None, seed: int = 0, gpu_memory_utilization: float | None = None):
        vllm = require_vllm()
        if vllm.__version__.split("+")[0] != TESTED_VLLM:
            warnings.warn(f"barkit's vLLM weight sync is tested with vllm {TESTED_VLLM}; this is {vllm.__version__}",
                          stacklevel=2)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
        kwargs: dict = dict(model=str(path), tokenizer=str(path), dtype=dtype, seed=seed,
                            worker_extension_cls="barkit.vllm_engine.WeightSync", max_model_len=max_model_len,
                            logprobs_mode="processed_logprobs")
        if on_cpu():
            # the CPU build needs eager mode and an explicit KV size, else it asks for more memory than there is
            kwargs.update(enforce_eager=True, kv_cache_memory_bytes=kv_cache_bytes or 256 << 20)
        elif gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds; the user needs the first line
            raise BarkitError(f"{path}: vLLM could not start ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
                from None
        self.path, self.version = Path(path), vllm.__version__

    def generate(self, prompt_ids: list[list[int]], n: int = 1, greedy: bool = True, max_new_tokens: int = 64,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                 stop_ids: list[int] | None = None) -> list[list[Sample]]:
        """`n` samples per prompt; greedy ignores temperature and top_p. Generation stops at `stop_ids` only (the
        ones HF `generate` is given), not at the model's own EOS unless listed. Logprobs are the engine's, of
        the sampled tokens after temperature (what an importance ratio against the trainer needs)."""
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                                max_tokens=max_new_tokens, seed=seed, stop_token_ids=stop_ids or None, ignore_eos=True,
                                logprobs=0, detokenize=False, skip_special_tokens=False)
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False)
        return [[Sample(list(c.token_ids), [_chosen(lp, t) for lp, t in zip(c.logprobs or [], c.token_ids)])
                 for c in out.outputs] for out in outputs]

    def push(self, tensors: dict[str, torch.Tensor]) -> float:
        """Load `tensors` (checkpoint names; a layer's other tensors must still equal the engine's checkpoint)
        into the engine in place; seconds taken."""
        from safetensors.torch import save_file

        start = time.perf_counter()
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        fd, name = tempfile.mkstemp(prefix="barkit-push-", suffix=".safetensors", dir=shm)
        os.close(fd)
        try:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, name)
            self.llm.collective_rpc("barkit_reload", args=(name,))
        finally:
            os.unlink(name)
        self.llm.reset_prefix_cache()
        return time.perf_counter() - start

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
            self.llm = None


def _chosen(logprobs: dict, token: int) -> float:
    entry = logprobs.get(token)
    return float("nan") if entry is None else float(entry.logprob)


class WeightSync:
    """vLLM worker extension (runs inside the engine's worker): reload pushed tensors in place.

    A push carries only what the trainer changed; vLLM rebuilds each layer from what it receives, so the layer's
    other tensors (frozen: the anchor's expert, frozen norms...) are read here from the checkpoint the engine
    started from, which they still equal. The anchor's FFN therefore never travels from trainer to engine."""

    def barkit_reload(self, path: str) -> int:
        from safetensors.torch import load_file

        from barkit.checkpoint import CheckpointReader

        pushed = load_file(path)
        if not hasattr(self, "_barkit_reader"):
            self._barkit_reader = CheckpointReader(self.model_runner.vllm_config.model_config.model)
        reader = self._barkit_reader
        unknown = sorted(set(pushed) - set(reader.keys()))
        if unknown:
            raise ValueError(f"pushed tensors the checkpoint does not have: {unknown[:3]}")
        full = {**{k: reader.get(k) for k in layer_closure(pushed, reader.keys()) if k not in pushed}, **pushed}
        self.model_runner.reload_weights(weights_iterator=iter(full.items()), is_checkpoint_format=True)
        if on_cpu():
            _prepack_cpu_experts(self.model_runner.get_model(), full)
        return len(pushed)


def _prepack_cpu_experts(model: torch.nn.Module, pushed: dict) -> None:
    """vLLM re-runs a fused-MoE layer's post-load step on reload but skips its kernel's own step when the kernel
    already exists (a weight update), and on CPU that step is the grouped-GEMM prepack: without it the layer
    computes with unpacked weights, silently wrong. Re-run it for the MoE layers the push touched."""
    touched = {m.group(1) for n in pushed if (m := _LAYER.match(n))}
    for name, module in model.named_modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        layer = _LAYER.match(name + ".")
        if kernel is not None and hasattr(module, "w13_weight") and layer and layer.group(1) in touched:
            kernel.fused_experts.process_weights_after_loading(module)


def _full_value(model: torch.nn.Module, name: str) -> torch.Tensor:
    """A parameter's whole value by its stock name: a row-split one reassembled, an FSDP2 shard gathered."""
    path, _, attr = name.rpartition(".")
    value = getattr(model.get_submodule(path), attr)
    value = value.full_tensor() if hasattr(value, "full_tensor") else value
    return value.detach()


def push_trainable(engine: VLLMEngine, model: torch.nn.Module, trainable: Iterable[str],
                   frozen_experts: dict[str, set[int]], expert_key) -> tuple[float, int]:
    """Push every trainable tensor (stock names) to `engine`, one decoder layer at a time (gathered, pushed,
    freed: under FSDP2 no more than a layer is ever whole). On-disk tensors of frozen experts (`frozen_experts`:
    stock name of a fused expert tensor -> its frozen rows; `expert_key(disk name)` -> (role, layer, expert) or
    None) are left out: the engine's worker reads them from the checkpoint. Every rank must call this (FSDP's
    gathers are collective). Returns (seconds, tensors sent)."""
    groups: dict[str, list[str]] = {}
    for name in sorted(trainable):
        m = _LAYER.match(name)
        groups.setdefault(m.group(1) if m else "", []).append(name)
    seconds, sent = 0.0, 0
    for names in groups.values():
        frozen = {r for n in names for r in frozen_experts.get(n, ())}
        disk = checkpoint_tensors(model, {n: _full_value(model, n) for n in names})
        disk = {k: v for k, v in disk.items() if (parsed := expert_key(k)) is None or parsed[2] not in frozen}
        seconds += engine.push(disk)
        sent += len(disk)
    return seconds, sent


def checkpoint_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In-memory tensors (stock parameter names) under their on-disk checkpoint names: transformers 5 fuses a
    layer's experts in memory (`mlp.experts.gate_up_proj [E, 2I, H]`) and writes them per expert, and vLLM's
    loaders for every family accept the on-disk names (Mixtral only those)."""
    from transformers.core_model_loading import revert_weight_conversion

    return dict(revert_weight_conversion(model, dict(tensors)))
