"""GRPO rollouts on vLLM (`rl.engine: vllm`): the engine samples, the trainer learns, and after every optimizer
step the trainable tensors are pushed back into the engine (`barkit.vllm_engine.push_trainable`).

The sequences come back in the shape `HFRollout` gives them (left-padded prompts, completions cut after the
first stop token), plus the engine's log-probabilities of the sampled tokens (`last_logprobs`), which the
objective compares with its own: vLLM's kernels are not the trainer's, so its samples are slightly off-policy;
GRPO corrects that with a truncated importance weight and logs how far the two drift (`engine_logp_diff`).
"""

from __future__ import annotations

import torch

from barkit.train.rollout import completion_mask, left_pad
from barkit.train.stages import StageConfig
from barkit.vllm_engine import VLLMEngine, push_trainable


class VLLMRollout:
    def __init__(self, cfg: StageConfig, raw_model, plan, spec, stop_ids: list[int], pad_id: int, rank: int):
        self.rl, self.raw, self.stop_ids, self.pad_id = cfg.rl, raw_model, stop_ids, pad_id
        self.trainable = sorted({*plan.full, *plan.partial})
        self.frozen_experts = {}
        for name, rows in plan.partial.items():
            if spec is not None and ".experts." in name:
                size = _first_dim(raw_model, name)
                self.frozen_experts[name] = set(range(size)) - set(rows)
        self.expert_key = spec.parse_expert_key if spec is not None else (lambda _: None)
        dtype = "bfloat16" if cfg.distributed.mixed_precision == "bf16" else "float32"
        self.engine = VLLMEngine(cfg.model, dtype=dtype, max_model_len=cfg.sequences.seq_len,
                                 kv_cache_bytes=cfg.rl.engine_kv_cache_mb << 20, seed=cfg.seed + 7919 * rank,
                                 gpu_memory_utilization=cfg.rl.engine_gpu_memory_utilization)
        self.last_logprobs: torch.Tensor | None = None
        self.sync_seconds, self.sent = 0.0, 0
        self.stale = True  # a resumed trainer no longer holds the checkpoint's weights: push before the first sample

    def __call__(self, prompt_ids: list[list[int]], samples: int, greedy: bool) -> tuple[torch.Tensor, ...]:
        """Left-padded prompts repeated `samples` times -> (sequences, attention mask, prompt width)."""
        if self.stale:
            self.sync()
        out = self.engine.generate(prompt_ids, n=samples, greedy=greedy, max_new_tokens=self.rl.max_new_tokens,
                                   temperature=self.rl.temperature, top_p=self.rl.top_p, stop_ids=self.stop_ids)
        ids, mask = left_pad([p for p in prompt_ids for _ in range(samples)], self.pad_id)
        flat = [s for per_prompt in out for s in per_prompt]
        width = max(1, max(len(s.token_ids) for s in flat))
        completion = torch.full((len(flat), width), self.pad_id, dtype=torch.long)
        logprobs = torch.zeros(len(flat), width)
        for i, s in enumerate(flat):
            completion[i, :len(s.token_ids)] = torch.tensor(s.token_ids, dtype=torch.long)
            logprobs[i, :len(s.logprobs)] = torch.tensor(s.logprobs)
        cmask = completion_mask(completion, self.stop_ids, self.pad_id)
        self.last_logprobs = logprobs * cmask
        return torch.cat([ids, completion], 1), torch.cat([mask, cmask], 1), ids.shape[1]

    def sync(self) -> None:
        """Push the trainer's current trainable tensors into the engine (collective under FSDP)."""
        seconds, self.sent = push_trainable(self.engine, self.raw, self.trainable, self.frozen_experts,
                                            self.expert_key)
        self.sync_seconds += seconds
        self.stale = False

    def close(self) -> None:
        self.engine.close()


def _first_dim(model: torch.nn.Module, name: str) -> int:
    path, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(path), attr).shape[0]
