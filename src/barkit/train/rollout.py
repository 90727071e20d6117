"""The rollout seam of GRPO: prompt ids -> sampled sequences, and the helpers every sampler shares.

A rollout is called as `rollout(prompt_ids, samples, greedy) -> (sequences, attention mask, prompt width)`:
left-padded prompts, each repeated `samples` times, followed by the completions, masked after their first stop
token (`completion_mask`, shared with evaluation). `HFRollout` samples with HF `generate` on the training model;
`barkit.train.vllm_rollout.VLLMRollout` on a vLLM engine; pass any other to `train(cfg, rollout=...)`.
"""

from __future__ import annotations

import torch

from barkit.eval.generation import completion_mask
from barkit.train.stages import RLConfig


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):], mask[i, width - len(s):] = torch.tensor(s), 1
    return ids, mask



class HFRollout:
    """Sampling with HF `generate` on the training model itself (eval mode while it samples)."""

    def __init__(self, model, rl: RLConfig, stop_ids: list[int], pad_id: int, device, synced: bool = False):
        self.model, self.rl, self.stop_ids, self.pad_id, self.device = model, rl, stop_ids, pad_id, device
        self.synced = synced  # sharded weights: every rank must run the same number of forward passes

    @torch.no_grad()
    def __call__(self, prompt_ids: list[list[int]], samples: int, greedy: bool) -> tuple[torch.Tensor, ...]:
        """Left-padded prompts repeated `samples` times -> (sequences, attention mask, prompt width)."""
        ids, mask = left_pad([p for p in prompt_ids for _ in range(samples)], self.pad_id)
        self.model.eval()
        sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=self.rl.temperature,
                                                              top_p=self.rl.top_p, top_k=0)
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=self.rl.max_new_tokens, eos_token_id=self.stop_ids,
                                  pad_token_id=self.pad_id, synced_gpus=self.synced, **sampling)
        self.model.train()
        completion = out[:, ids.shape[1]:].cpu()
        cmask = completion_mask(completion, self.stop_ids, self.pad_id)
        return torch.cat([ids, completion], 1), torch.cat([mask, cmask], 1), ids.shape[1]
