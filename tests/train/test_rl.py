"""GRPO pieces: rewards through the verifier registry, group advantages, completion masks, clipping."""

import math

import torch

from barkit.train import rollout
from barkit.train.data import RLPrompt
from barkit.train.objectives import grpo as rl


def test_score_uses_each_rows_verifier_and_keeps_none_as_nan():
    prompts = [RLPrompt([1], "math_answer", {"answer": "4"}), RLPrompt([1], "exact_match", {"answer": "paris"}),
               RLPrompt([1], "math_answer", {"answer": "5"}), RLPrompt([1], "exact_match", {"answer": None})]
    rewards = rl.score(["2 + 2 = 4", "Paris", "The answer is 6", "whatever"], prompts)
    assert rewards[:3].tolist() == [1.0, 1.0, 0.0]
    assert math.isnan(rewards[3])


def test_code_rewards_use_the_reward_variant():
    prompts = [RLPrompt([1], "code_tests", {"tests": "assert f(1) == 1\nassert f(2) == 3", "entry_point": "f"})]
    # half the asserts pass: partial credit 0.5 in evaluation, 0 as an RL reward (BAR's 0.99 threshold)
    assert rl.score(["def f(x):\n    return x\n"], prompts).tolist() == [0.0]


def test_a_step_counts_answers_it_could_not_read_and_verifiers_that_failed(monkeypatch):
    from collections import Counter

    from barkit.eval import verifiers

    prompts = [RLPrompt([1], "math_answer", {"answer": "\\frac{1}{2}"})] * 3 + \
        [RLPrompt([1], "exact_match", {"answer": "paris"})] * 2
    real = verifiers.exact_match

    def flaky(completions, **columns):  # raises on one item: only that item may lose its reward
        if "boom" in completions:
            raise RuntimeError("verifier bug")
        return real(completions, **columns)

    monkeypatch.setitem(verifiers.VERIFIERS, "exact_match", flaky)
    counts = Counter()
    rewards = rl.score(["\\boxed{0.5}", "no idea", "\\boxed{3}", "Paris", "boom"], prompts, counts)
    assert rewards.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert counts == Counter(scored=5, no_answer=1, errors=1)


def test_group_advantages():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, float("nan"), 0.0, 0.0]])
    adv = rl.group_advantages(rewards, "group")
    std = (4 * 0.25 / 3) ** 0.5
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, 0.5, -0.5]) / (std + 1e-4))
    assert adv[1].tolist() == [0.0] * 4  # no signal in a group that agrees
    assert adv[2, 1] == 0.0 and adv[2, 0] > 0 > adv[2, 2]
    assert rl.group_advantages(rewards, "none")[0].tolist() == [0.5, -0.5, 0.5, -0.5]


def test_completion_mask_stops_after_the_first_stop_token():
    ids = torch.tensor([[7, 8, 5, 1, 1], [7, 3, 8, 8, 8], [4, 4, 4, 4, 4]])
    assert rollout.completion_mask(ids, [5, 3], pad_id=1).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1] * 5]


def test_clipping_is_asymmetric_and_stops_gradients():
    logps = torch.log(torch.tensor([[1.25, 1.25, 0.7, 0.7]])).requires_grad_(True)
    adv = torch.tensor([1.0])
    loss, clipped = rl.clipped_surrogate(logps, torch.zeros(1, 4), adv, epsilon=0.2, epsilon_high=0.3)
    assert clipped.tolist() == [[False, False, False, False]]  # 1.25 < 1.3 upper; low clip only binds for A < 0
    loss, clipped = rl.clipped_surrogate(logps, torch.zeros(1, 4), adv, epsilon=0.2, epsilon_high=0.2)
    assert clipped.tolist() == [[True, True, False, False]]
    loss.sum().backward()
    assert logps.grad[0, :2].tolist() == [0.0, 0.0] and (logps.grad[0, 2:] < 0).all()


def test_on_policy_ratio_is_one_with_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, clipped = rl.clipped_surrogate(logps, None, torch.tensor([2.0]), 0.2, 0.28)
    assert loss.tolist() == [[-2.0, -2.0]] and not clipped.any()
    loss.sum().backward()
    assert logps.grad.tolist() == [[-2.0, -2.0]]


def test_left_pad_and_positions():
    ids, mask = rollout.left_pad([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert rl.positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


class _DecodeIds(rl.GRPOObjective):
    """A subclass (the objective's extension seam) whose completions decode to the prompt id they came from."""

    def decode(self, sequences, width):
        return [str(int(s[width]) - 100) for s in sequences]


def _stub_rollout(prompt_ids, samples, greedy):
    """Deterministic 'generation': each completion is the prompt's first token and a stop token."""
    seqs = [p + [p[0], 7] for p in prompt_ids for _ in range(samples)]
    ids, mask = rollout.left_pad([s[:-2] for s in seqs], 0)
    tail = torch.tensor([s[-2:] for s in seqs])
    return torch.cat([ids, tail], 1), torch.cat([mask, torch.ones_like(tail)], 1), ids.shape[1]


def _stub_objective(monkeypatch, dynamic: bool, prompts_per_step: int = 4, rounds: int = 4):
    """A GRPOObjective built as the engine builds it, with the rollout injected: prompt i's group gets rewards
    from `pattern`."""
    from types import SimpleNamespace

    from barkit.tiny import tiny_tokenizer
    from barkit.train.objectives import TrainContext
    from barkit.train.stages import RLConfig, StageConfig

    # prompt id -> rewards of its 4 samples: ids divisible by 3 carry signal, the others all agree
    pattern = {i: [1.0, 0.0, 0.0, 1.0] if i % 3 == 0 else [float(i % 2)] * 4 for i in range(30)}
    prompts = [RLPrompt([100 + i] * (1 + i % 3), "stub", {"id": i}) for i in range(30)]
    cfg = StageConfig(stage="rl", model="m", data=["d"], out="o", rl=RLConfig(
        prompts_per_step=prompts_per_step, num_generations=4, dynamic_sampling=dynamic,
        max_sampling_rounds=rounds)).resolve()
    runtime = SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"))
    ctx = TrainContext(cfg, None, None, tiny_tokenizer(), runtime, total_steps=1, rollout=_stub_rollout)
    obj = _DecodeIds(ctx, prompts, [])
    monkeypatch.setattr(rl, "score", lambda completions, group, counts=None: torch.tensor(
        [pattern[int(c)][k % 4] for k, c in enumerate(completions)]))
    return obj, pattern


def test_dynamic_sampling_keeps_only_groups_with_signal(monkeypatch):
    obj, pattern = _stub_objective(monkeypatch, dynamic=True, rounds=12)
    (seqs, mask, width, rewards), first, rounds = obj._rollouts(step=0)
    ids = [int(seqs[g * 4, width]) - 100 for g in range(len(seqs) // 4)]
    assert len(ids) == 4 and all(i % 3 == 0 for i in ids)  # every kept group has reward variance
    assert len(set(ids)) == 4  # a step never draws a prompt twice
    assert rewards.view(-1, 4).tolist() == [pattern[i] for i in ids]
    assert first.numel() == 4 * 4 and rounds > 1  # round 0's rewards are reported as the step's reward
    assert all(mask[r, width:].sum() == 2 for r in range(len(seqs)))  # completions survive re-padding
    for r in range(len(seqs)):  # prompts re-left-padded: each row's prompt is its id repeated, then padding
        i = int(seqs[r, width]) - 100
        assert seqs[r, width - (1 + i % 3):width].tolist() == [100 + i] * (1 + i % 3)
        assert mask[r, :width].sum() == 1 + i % 3
    again = obj._rollouts(step=0)  # the same step draws the same prompts (resume)
    assert torch.equal(again[0][0], seqs)


def test_dynamic_sampling_stops_at_max_rounds_and_falls_back(monkeypatch):
    obj, _ = _stub_objective(monkeypatch, dynamic=True, prompts_per_step=8, rounds=1)
    (seqs, _, width, rewards), first, rounds = obj._rollouts(step=0)
    assert rounds == 1 and 0 < len(seqs) < 8 * 4  # one round: only its informative groups, fewer than asked
    plain, _ = _stub_objective(monkeypatch, dynamic=False, prompts_per_step=8)
    (seqs, _, _, rewards), first, rounds = plain._rollouts(step=0)
    assert rounds == 1 and len(seqs) == 8 * 4 and torch.equal(rewards, first)
