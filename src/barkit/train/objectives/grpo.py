"""GRPO with verifiable rewards, on the shared loop (see barkit.train.loop for why not TRL's GRPOTrainer).

It follows TRL's GRPO: `num_generations` samples per prompt from HF `generate`, rewards from the shared
verifiers (TRL's reward contract `(completions, **columns) -> list[float | None]`), advantages normalised
within each prompt's group, the clipped surrogate with asymmetric bounds (1 - epsilon, 1 + epsilon_high),
token-level ("dapo", TRL's default) or per-sequence ("grpo") averaging, and an optional KL term against
the starting model (beta, 0 by default as in BAR). Code rewards use the verifier's `_reward` variant
(pass rates below 0.99 count as 0) when one is registered.

Rollouts go through one seam (`barkit.train.rollout`: prompt ids -> sampled sequences): `HFRollout` uses HF `generate`
on the training model; pass another to `train(cfg, rollout=...)` (e.g. a vLLM engine) or subclass
`GRPOObjective` and register it under a new name.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import Counter

import torch
import torch.nn.functional as F

from barkit.errors import BarkitError
from barkit.eval.generation import clean_completion, stop_token_ids
from barkit.eval.rewards import audit, reward_verifier, tally
from barkit.eval.verifiers import VERIFIER_COLUMNS
from barkit.train import data
from barkit.train.data import RLPrompt, StepOrder
from barkit.train.objectives.base import Objective, Update, shard
from barkit.train.rollout import HFRollout
from barkit.train.stages import StageConfig


def score(completions: list[str], prompts: list[RLPrompt], counts: Counter | None = None) -> torch.Tensor:
    """Rewards per completion, NaN where the verifier says "not applicable" (None). A verifier that fails on an
    item scores it 0; `counts`, when given, gathers the step's scored / no_answer / errors tallies."""
    rewards = torch.full((len(completions),), float("nan"))
    for name in sorted({p.verifier for p in prompts}):
        idx = [i for i, p in enumerate(prompts) if p.verifier == name]
        keys = sorted({k for i in idx for k in prompts[i].columns})
        columns = {k: [prompts[i].columns.get(k) for i in idx] for k in keys}
        records = audit(reward_verifier(name), [completions[i] for i in idx], columns)
        if counts is not None:
            counts.update(tally(records))
        for i, r in zip(idx, records):
            rewards[i] = float("nan") if r.reward is None else float(r.reward)
    return rewards


def group_advantages(rewards_PG: torch.Tensor, scale: str) -> torch.Tensor:
    """(r - group mean) / (std + 1e-4); NaN rewards get advantage 0 and do not count in the statistics.

    >>> group_advantages(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "none").tolist()
    [[0.5, -0.5], [0.0, 0.0]]
    """
    valid = ~rewards_PG.isnan()
    r = torch.where(valid, rewards_PG, 0.0)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = r.sum(1, keepdim=True) / n
    centred = torch.where(valid, r - mean, 0.0)
    if scale == "group":
        std = (centred.pow(2).sum(1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
        centred = centred / (std + 1e-4)
    elif scale == "batch":
        values = r[valid]
        centred = centred / ((values.std() if values.numel() > 1 else torch.tensor(0.0)) + 1e-4)
    return centred


def informative_groups(rewards: torch.Tensor, group_size: int) -> list[int]:
    """Indices of groups whose valid rewards are not all equal (the others have zero advantage).

    >>> informative_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, float("nan"), 0.0]), 2)
    [1]
    """
    out = []
    for g, values in enumerate(rewards.view(-1, group_size)):
        valid = values[~values.isnan()]
        if valid.numel() > 1 and bool(valid.max() != valid.min()):
            out.append(g)
    return out


def merge_rollouts(parts: list[tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]], pad_id: int) -> tuple:
    """Concatenate generation rounds: prompts re-left-padded to the widest, completions right-padded.

    >>> a = (torch.tensor([[7, 8, 9]]), torch.tensor([[1, 1, 1]]), 2, torch.tensor([1.0]))
    >>> b = (torch.tensor([[5, 6, 7, 8]]), torch.tensor([[1, 1, 1, 1]]), 1, torch.tensor([0.0]))
    >>> ids, mask, width, rewards = merge_rollouts([a, b], 0)
    >>> ids.tolist(), mask.tolist(), width, rewards.tolist()
    ([[7, 8, 9, 0, 0], [0, 5, 6, 7, 8]], [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], 2, [1.0, 0.0])
    """
    width = max(w for _, _, w, _ in parts)
    tail = max(s.shape[1] - w for s, _, w, _ in parts)
    ids, masks = [], []
    for seqs, mask, w, _ in parts:
        left, right = width - w, tail - (seqs.shape[1] - w)
        ids.append(F.pad(seqs, (left, right), value=pad_id))
        masks.append(F.pad(mask, (left, right), value=0))
    return torch.cat(ids), torch.cat(masks), width, torch.cat([r for *_, r in parts])


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def token_logps(model, input_ids, attention_mask, prompt_width: int, temperature: float) -> torch.Tensor:
    """log p(completion token) under `model` for the completion part of left-padded sequences."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                   use_cache=False).logits
    logits = logits[:, prompt_width - 1:-1].float() / temperature
    targets = input_ids[:, prompt_width:]
    return torch.gather(F.log_softmax(logits, -1), 2, targets.unsqueeze(-1)).squeeze(-1)


def clipped_surrogate(logps_BT: torch.Tensor, old_BT: torch.Tensor | None, adv_B: torch.Tensor, epsilon: float,
                      epsilon_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped objective per token, negated as a loss, and where clipping removed the gradient.
    `old_BT` None means on-policy (ratio 1, the plain policy gradient).

    >>> loss, clipped = clipped_surrogate(torch.log(torch.tensor([[1.5, 0.5]])), torch.zeros(1, 2),
    ...                                   torch.tensor([1.0]), 0.2, 0.28)
    >>> loss.tolist(), clipped.tolist()
    ([[-1.2799999713897705, -0.5]], [[True, False]])
    """
    ratio = torch.exp(logps_BT - (logps_BT.detach() if old_BT is None else old_BT))
    a = adv_B.unsqueeze(1)
    per_token = -torch.min(ratio * a, ratio.clamp(1 - epsilon, 1 + epsilon_high) * a)
    clipped = ((ratio < 1 - epsilon) & (a < 0)) | ((ratio > 1 + epsilon_high) & (a > 0))
    return per_token, clipped


class GRPOObjective(Objective):
    name = "grpo"

    @classmethod
    def load(cls, cfg: StageConfig, tokenizer, settings) -> tuple[list, list]:
        """Training prompts (each with its verifier's columns) and held-out prompts (`rl.eval_data`)."""
        if cfg.rl.engine == "vllm":
            from barkit.vllm_engine import require_vllm

            require_vllm()  # before anything is loaded: one line naming the extra
        limit = cfg.sequences.seq_len - cfg.rl.max_new_tokens
        if limit < 1:
            raise BarkitError(f"config key 'sequences.seq_len': {cfg.sequences.seq_len} leaves no room for prompts "
                              f"after rl.max_new_tokens={cfg.rl.max_new_tokens}")
        def read(path: str) -> list:
            return data.load_rl_prompts(path, tokenizer, limit, VERIFIER_COLUMNS, cfg.columns)

        prompts = [p for path in cfg.data for p in read(path)]
        held_out = read(cfg.rl.eval_data) if cfg.rl.eval_data else []
        return prompts, held_out[:cfg.rl.eval_max_prompts]

    @classmethod
    def items_per_step(cls, cfg: StageConfig) -> int:
        return cfg.rl.prompts_per_step

    def __init__(self, ctx, items: list[RLPrompt], held_out: list[RLPrompt], settings=None):
        super().__init__(ctx, items, held_out, settings)
        cfg, tokenizer = ctx.cfg, ctx.tokenizer
        self.rl, self.raw, self.tok = cfg.rl, ctx.raw_model, tokenizer
        self.prompts, self.eval_prompts, self.total = items, held_out, ctx.total_steps
        self.stop_ids = stop_token_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.sharded = getattr(self.acc, "sharded", False)  # FSDP: every rank must join every forward pass
        self.rollout = ctx.rollout
        if self.rollout is None and self.rl.engine == "vllm":
            from barkit.train.vllm_rollout import VLLMRollout

            self.rollout = VLLMRollout(cfg, self.raw, ctx.plan, ctx.spec, self.stop_ids, self.pad_id,
                                       self.acc.process_index)
        if self.rollout is None:
            self.rollout = HFRollout(self.raw, self.rl, self.stop_ids, self.pad_id, self.acc.device,
                                     synced=self.sharded)
        self.generate_seconds = 0.0
        if self.sharded and (self.rl.beta > 0 or self.rl.dynamic_sampling):
            raise BarkitError("config keys 'rl.beta', 'rl.dynamic_sampling': not supported with distributed.strategy "
                              "fsdp yet (a KL reference model; sampling rounds that differ between ranks)")
        self.orders = {0: StepOrder(len(items), cfg.rl.prompts_per_step, cfg.seed)}
        world, per_rank = self.acc.num_processes, self.rl.prompts_per_step // self.acc.num_processes
        if self.rl.prompts_per_step % world or per_rank * self.rl.num_generations % cfg.grad_accum:
            raise BarkitError(f"config key 'rl.prompts_per_step': {self.rl.prompts_per_step} prompts must split "
                              f"evenly over {world} processes, and each process's samples over "
                              f"grad_accum={cfg.grad_accum}")
        self.ref, self.counts = None, Counter()
        if self.rl.beta > 0:
            self.ref = copy.deepcopy(self.raw).eval().requires_grad_(False)

    def generate(self, prompt_ids: list[list[int]], samples: int, greedy: bool) -> tuple[torch.Tensor, ...]:
        start = time.perf_counter()
        out = self.rollout(prompt_ids, samples, greedy)
        self.generate_seconds += time.perf_counter() - start
        return out

    def close(self) -> None:
        getattr(self.rollout, "close", lambda: None)()

    def decode(self, sequences: torch.Tensor, width: int) -> list[str]:
        texts = self.tok.batch_decode(sequences[:, width:], skip_special_tokens=False)
        return [clean_completion(t, self.tok) for t in texts]

    def evaluate(self, step: int) -> dict[str, float | None]:
        """Held-out rewards: `eval_reward`, the mean greedy reward, and with `rl.eval_samples` > 0 also
        `eval_reward_sampled`, the mean over that many samples per prompt at the training temperature (the
        expected reward GRPO optimises). Samples are drawn under their own seed, so evaluating does not
        change the training run's random stream (and resumed runs stay bit-identical)."""
        if not self.eval_prompts:
            return {}
        out = {"eval_reward": self._held_out_reward(1, greedy=True)}
        if self.rl.eval_samples > 0:
            devices = [self.acc.device] if self.acc.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.cfg.seed * 1_000_003 + step)
                out["eval_reward_sampled"] = self._held_out_reward(self.rl.eval_samples, greedy=False)
        return out

    def _held_out_reward(self, samples: int, greedy: bool) -> float | None:
        mine = self.eval_prompts[self.acc.process_index::self.acc.num_processes]
        totals = torch.zeros(2)
        if mine or self.sharded:  # sharded weights: every rank joins every forward pass
            batch = mine or self.eval_prompts[:1]
            seqs, _, width = self.generate([p.prompt_ids for p in batch], samples, greedy=greedy)
            if mine:
                rewards = score(self.decode(seqs, width), [p for p in mine for _ in range(samples)])
                valid = rewards[~rewards.isnan()]
                totals += torch.tensor([valid.sum().item(), valid.numel()])
        if self.acc.num_processes > 1:
            totals = self.acc.reduce(totals.to(self.acc.device), "sum").cpu()
        return float(totals[0] / totals[1]) if totals[1] else None

    def __call__(self, step: int, update: Update) -> dict:
        rl, acc, world = self.rl, self.acc, self.acc.num_processes
        self.counts, self.generate_seconds = Counter(), 0.0
        (seqs, mask, width, rewards), first, rounds = self._rollouts(step)
        # the engine's log-probabilities of these samples (vllm), for the off-policy correction
        behaviour = getattr(self.rollout, "last_logprobs", None)
        adv = group_advantages(rewards.view(-1, rl.num_generations), rl.scale_rewards).flatten()
        cmask = mask[:, width:].float()
        seqs, mask, cmask, adv = (t.to(acc.device) for t in (seqs, mask, cmask, adv))
        behaviour = None if behaviour is None else behaviour.to(acc.device)
        norm = self._normaliser(cmask)
        old = self._logps_no_grad(self.model, seqs, mask, width) if rl.num_iterations > 1 else None
        ref = self._logps_no_grad(self.ref, seqs, mask, width) if self.ref is not None else None
        stats = torch.zeros(3, device=acc.device)  # (sum of loss, clipped tokens, sum of |engine - trainer| logp)
        # dynamic sampling can keep fewer rows than configured: split what there is, never an empty part
        parts = torch.arange(len(seqs)).tensor_split(min(self.cfg.grad_accum, len(seqs)))
        for _ in range(rl.num_iterations):
            for k, part in enumerate(parts):
                sync = k == len(parts) - 1
                with contextlib.nullcontext() if sync else acc.no_sync(self.model):
                    loss, clipped, drift = self._loss(seqs[part], mask[part], cmask[part], adv[part], width,
                                                      *(None if t is None else t[part] for t in (old, ref, behaviour)))
                    acc.backward(loss * world / norm)
                stats += torch.stack([loss.detach(), clipped, drift])
            grad_norm = update()
        sync_start = time.perf_counter()
        if hasattr(self.rollout, "sync"):
            self.rollout.sync()  # the engine samples the next step with the weights just updated
        sync_seconds = time.perf_counter() - sync_start
        generate_seconds = self.generate_seconds
        row = self._metrics(first, cmask, stats, norm, grad_norm, step)
        row.update(generate_s=round(generate_seconds, 4), sync_s=round(sync_seconds, 4))
        if rl.dynamic_sampling:
            row.update(kept_groups=len(seqs) // rl.num_generations, sampling_rounds=rounds)
        return row

    def _prompts(self, step: int, round_: int) -> list[int]:
        """This rank's prompt indices for a generation round: round 0 is the step's batch; dynamic sampling's
        later rounds draw from orders with their own seeds, so a resumed run draws the same prompts."""
        if round_ not in self.orders:
            self.orders[round_] = StepOrder(len(self.prompts), self.rl.prompts_per_step, self.cfg.seed + 7919 * round_)
        return shard(self.orders[round_].batch(step), self.acc.process_index, self.acc.num_processes)

    def _rollouts(self, step: int) -> tuple[tuple, torch.Tensor, int]:
        """((sequences, mask, prompt width, rewards) to train on, round 0's rewards, rounds generated).

        Without dynamic sampling that is round 0 as generated. With it, groups whose rewards are all equal
        (zero advantage: no gradient, but they dilute the token-mean loss) are dropped and further rounds,
        skipping prompts this step already drew, run until this rank has as many informative groups as
        prompts (DAPO); a step that finds none trains on round 0 (a zero gradient)."""
        rl, kept, first, seen, have = self.rl, [], None, set(), 0
        want = len(self._prompts(step, 0))
        rounds = rl.max_sampling_rounds if rl.dynamic_sampling else 1
        for r in range(rounds):
            fresh = [i for i in dict.fromkeys(self._prompts(step, r)) if i not in seen]
            seen.update(fresh)
            if not fresh:
                continue
            prompts = [self.prompts[i] for i in fresh]
            seqs, mask, width = self.generate([p.prompt_ids for p in prompts], rl.num_generations, greedy=False)
            rewards = score(self.decode(seqs, width), [p for p in prompts for _ in range(rl.num_generations)],
                            self.counts if first is None else None)
            if first is None:
                first, fallback = rewards, (seqs, mask, width, rewards)
            if not rl.dynamic_sampling:
                return fallback, first, 1
            groups = informative_groups(rewards, rl.num_generations)[:want - have]
            if groups:
                rows = torch.cat([torch.arange(g * rl.num_generations, (g + 1) * rl.num_generations) for g in groups])
                kept.append((seqs[rows], mask[rows], width, rewards[rows]))
                have += len(groups)
            if have == want:
                break
        return (merge_rollouts(kept, self.pad_id) if kept else fallback), first, r + 1

    def _normaliser(self, cmask: torch.Tensor) -> float:
        """dapo: completion tokens over all processes; grpo: sequences over all processes."""
        local = cmask.sum() if self.rl.loss_type == "dapo" else torch.tensor(float(len(cmask)), device=cmask.device)
        total = self.acc.reduce(local.clone(), "sum") if self.acc.num_processes > 1 else local
        return max(float(total), 1.0)

    @torch.no_grad()
    def _logps_no_grad(self, model, seqs, mask, width) -> torch.Tensor:
        return token_logps(model, seqs, mask, width, self.rl.temperature)

    def _loss(self, seqs, mask, cmask, adv, width, old, ref, behaviour) -> tuple[torch.Tensor, ...]:
        """Summed clipped-surrogate loss (to be divided by the global normaliser), clipped-token count, and the
        summed |trainer - engine| log-probability over completion tokens (0 without engine log-probabilities).

        With `behaviour` (the engine's log-probabilities of the samples), each token's loss is weighted by the
        truncated importance ratio min(p_trainer / p_engine, rl.tis_cap), detached (TIS)."""
        logps = token_logps(self.model, seqs, mask, width, self.rl.temperature)
        high = self.rl.epsilon if self.rl.epsilon_high is None else self.rl.epsilon_high
        per_token, clipped = clipped_surrogate(logps, old, adv, self.rl.epsilon, high)
        drift = torch.zeros((), device=logps.device)
        if behaviour is not None:
            delta = (logps.detach() - behaviour) * cmask
            per_token = per_token * torch.exp(delta).clamp(max=self.rl.tis_cap)
            drift = delta.abs().sum()
        if ref is not None:
            delta = ref - logps
            per_token = per_token + self.rl.beta * (torch.exp(delta) - delta - 1)
        clipped = (clipped.float() * cmask).sum().detach()
        if self.rl.loss_type == "dapo":
            return (per_token * cmask).sum(), clipped, drift
        return ((per_token * cmask).sum(1) / cmask.sum(1).clamp(min=1)).sum(), clipped, drift

    def _metrics(self, rewards, cmask, stats, norm, grad_norm, step) -> dict:
        acc = self.acc
        valid = ~rewards.isnan()
        groups = rewards.view(-1, self.rl.num_generations)
        # groups with a reward but no spread: every scored group that dynamic sampling would drop
        zero_std = int((~groups.isnan()).any(1).sum()) - len(informative_groups(rewards, self.rl.num_generations))
        local = torch.tensor([rewards[valid].sum().item(), valid.sum().item(), cmask.sum().item(), len(cmask),
                              zero_std, len(groups), self.counts["no_answer"], self.counts["errors"]],
                             dtype=torch.float64)
        if acc.num_processes > 1:
            local = acc.reduce(local.to(acc.device), "sum").cpu()
            stats = acc.reduce(stats, "sum")
        r_sum, r_n, tokens, seqs, zero, n_groups, no_answer, errors = local.tolist()
        row = {"loss": float(stats[0]) / norm / self.rl.num_iterations, "reward": r_sum / max(r_n, 1),
               "completion_len": tokens / max(seqs, 1), "frac_zero_std_groups": zero / max(n_groups, 1),
               "clip_ratio": float(stats[1]) / max(tokens * self.rl.num_iterations, 1), "grad_norm": grad_norm,
               "tokens": int(tokens), "frac_no_answer": no_answer / max(r_n, 1), "verifier_errors": int(errors)}
        if getattr(self.rollout, "last_logprobs", None) is not None:  # mean |trainer - engine| logp per token
            row["engine_logp_diff"] = float(stats[2]) / max(tokens * self.rl.num_iterations, 1)
        done = step + 1
        if self.eval_prompts and (self.rl.eval_every and done % self.rl.eval_every == 0 or done == self.total):
            row.update(self.evaluate(done))
        return row
