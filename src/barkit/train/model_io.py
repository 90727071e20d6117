"""What a stage may train on, loading it, and writing the trained checkpoint (atomically, verified)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from barkit import verify
from barkit.arch import ArchSpec, moe_model_types, moe_spec_of, num_experts, supported_dense_types
from barkit.checkpoint import (
    CheckpointReader,
    sha256_file,
    write_metadata,
)
from barkit.errors import BarkitError
from barkit.outputs import atomic_output_dir
from barkit.train.stages import BAR_STAGES, StageConfig

BAR_EXPERTS = 2


@dataclass
class ModelInfo:
    reader: CheckpointReader
    spec: ArchSpec | None  # None for dense models
    num_experts: int  # 0 for dense models

    @property
    def dtype(self) -> torch.dtype:
        """The checkpoint's weight dtype (of its first tensor)."""
        return self.reader.dtype(self.reader.keys()[0])

    @property
    def family(self) -> str:
        return self.spec.name if self.spec else str(self.reader.config.get("model_type"))


def inspect_model(cfg: StageConfig, explicit_trainable: bool) -> ModelInfo:
    """BAR stages need a 2-expert barkit checkpoint, router training an MoE; an explicit `trainable`
    lets midtrain/sft/rl train other models too (the anchor's own SFT, dense baselines)."""
    reader = CheckpointReader(cfg.model)
    model_type = reader.config.get("model_type")
    spec = moe_spec_of(reader.config)
    dense = model_type in supported_dense_types()
    where = reader.path / "config.json"
    if spec is None and not dense:
        raise BarkitError(f"{where}: unsupported model_type '{model_type}' (dense: "
                          f"{', '.join(supported_dense_types())}; MoE: "
                          f"{', '.join(moe_model_types())})")
    info = ModelInfo(reader, spec, num_experts(spec, reader.config) if spec else 0)
    if cfg.stage in BAR_STAGES and not explicit_trainable and info.num_experts != BAR_EXPERTS:
        what = f"a {info.num_experts}-expert MoE" if spec else f"a dense '{model_type}' model"
        raise BarkitError(f"{reader.path}: not a barkit 2-expert checkpoint ({what}); the {cfg.stage} stage "
                          "trains expert 1 of a `barkit branch` output (or declare `trainable` explicitly)")
    if cfg.stage == "router" and spec is None:
        raise BarkitError(f"{reader.path}: router training needs a mixture-of-experts checkpoint, "
                          f"got a dense '{model_type}' model")
    if cfg.rl.eval_data and cfg.stage != "rl":
        raise BarkitError("config key 'rl.eval_data': only used by the rl stage")
    return info


def load_model(info: ModelInfo, device, dtype: torch.dtype) -> torch.nn.Module:
    return verify.load_strict(info.reader.path, dtype=dtype).to(device).train()


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BarkitError(f"{path}: no usable tokenizer ({str(exc).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _experts(info: ModelInfo, cfg: StageConfig) -> list[str] | None:
    names = list((info.reader.manifest() or {}).get("experts") or []) or None
    if cfg.expert_name and cfg.stage in BAR_STAGES and info.num_experts == BAR_EXPERTS:
        names = (names or ["anchor", "trainable"])[:1] + [cfg.expert_name]
    return names


def write_output(cfg: StageConfig, info: ModelInfo, model: torch.nn.Module, work: Path, extra: dict,
                 check_frozen) -> Path:
    """save_pretrained into a temp dir with tokenizer, config, manifest, metrics and curves; load it back
    with stock transformers and re-check the frozen bytes before renaming it into place."""
    dtype = info.dtype
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        try:
            model.to(dtype).save_pretrained(str(tmp), max_shard_size=cfg.max_shard_size)
        except SafetensorError as e:  # a full disk, named with the output it was for
            raise BarkitError(f"{cfg.out}: cannot write the checkpoint: {e}") from None
        model.float()
        for name in ("metrics.jsonl", "curves.png"):
            if (work / name).is_file():
                shutil.copy2(work / name, tmp / name)
        weights = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
                   for p in sorted(tmp.glob("*.safetensors"))}
        experts = _experts(info, cfg)
        manifest_extra = {"arch": info.family, **({"experts": experts} if experts else {}), **extra}
        write_metadata(tmp, cfg.stage, cfg, {"model": info.reader}, weights, tokenizer_src=info.reader.path,
                       seed=cfg.seed, extra=manifest_extra)
        verify.check_key_set(tmp, set(info.reader.keys()))
        if cfg.verify != "none" and verify.should_load(tmp, cfg.verify):
            check_frozen(verify.load_strict(tmp, dtype=torch.float32))
    return Path(cfg.out)
