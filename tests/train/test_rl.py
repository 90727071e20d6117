"""GRPO pieces: rewards through the verifier registry, group advantages, completion masks, clipping."""

import math

import torch

from barkit.train import rl
from barkit.train.data import RLPrompt


def test_score_uses_each_rows_verifier_and_keeps_none_as_nan():
    prompts = [RLPrompt([1], "math_answer", {"answer": "4"}), RLPrompt([1], "exact_match", {"answer": "paris"}),
               RLPrompt([1], "math_answer", {"answer": "5"}), RLPrompt([1], "exact_match", {"answer": None})]
    rewards = rl.score(["2 + 2 = 4", "Paris", "The answer is 6", "whatever"], prompts)
    assert rewards[:3].tolist() == [1.0, 1.0, 0.0]
    assert math.isnan(rewards[3])


def test_code_rewards_use_the_reward_variant():
    from barkit.eval.verifiers import code_tests_reward

    assert rl.reward_function("code_tests") is code_tests_reward


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
    assert rl.completion_mask(ids, [5, 3], pad_id=1).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1] * 5]


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
    ids, mask = rl.left_pad([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert rl.positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
