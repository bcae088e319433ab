"""Known-answer tests of the three trainer losses, the rewards and the exact KL."""

import math
import types

import torch

from ehrjudge.train import expected, grpo, reinforce
from ehrjudge.train.rewards import exact_kl, reward_table


def _config(**overrides):
    values = {"kl_coef": 0.0, "advantage": "raw", "group_size": 4, "clip_eps": 0.2}
    values.update(overrides)
    return types.SimpleNamespace(**values)


def test_reward_shapes_known_values():
    # Setup
    scores = torch.tensor([1, 10, 4])
    # Run
    quadratic = reward_table(scores, "quadratic")
    absolute = reward_table(scores, "absolute")
    exact = reward_table(scores, "exact")
    # Assert: label k is column k-1
    assert quadratic[0, 0] == 1.0 and math.isclose(quadratic[0, 9].item(), 0.0, abs_tol=1e-7)
    assert math.isclose(quadratic[2, 6].item(), 1 - (3 / 9) ** 2, rel_tol=1e-6)  # label 7 vs score 4
    assert math.isclose(absolute[2, 6].item(), 1 - 3 / 9, rel_tol=1e-6)
    assert exact[1].tolist() == [0.0] * 9 + [1.0] and exact[2].sum() == 1.0 and exact[2, 3] == 1.0


def test_reward_after_caps_reads_answers_at_the_cap():
    # Setup: score 3 under a cap of 2.5 (a capped record), score 8 under no cap (10)
    scores, caps = torch.tensor([3, 8]), torch.tensor([2.5, 10.0])
    # Run
    capped = reward_table(scores, "quadratic", caps)
    plain = reward_table(scores, "quadratic")
    # Assert: answers 1, 2 keep their value; every answer >= 3 reads as 2.5, 0.5 from the score
    assert math.isclose(capped[0, 0].item(), 1 - (2 / 9) ** 2, rel_tol=1e-6)
    assert math.isclose(capped[0, 1].item(), 1 - (1 / 9) ** 2, rel_tol=1e-6)
    assert torch.allclose(capped[0, 2:], torch.full((8,), 1 - (0.5 / 9) ** 2))
    assert plain[0, 2] == 1.0 and torch.equal(capped[1], plain[1])  # a cap of 10 changes nothing


def test_expected_loss_and_gradient_hand_worked():
    # Setup: 3 labels with probabilities (0.5, 0.3, 0.2) and rewards (1, 0.5, 0).
    # J = 0.5*1 + 0.3*0.5 + 0.2*0 = 0.65; dJ/dz_k = pi_k (r_k - J) = (0.175, -0.045, -0.13).
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).requires_grad_(True)
    rewards = torch.tensor([[1.0, 0.5, 0.0]])
    # Run
    loss, stats = expected.loss(torch.log_softmax(logits, -1), rewards, None, {}, _config())
    loss.backward()
    # Assert: loss = -J, gradient of the loss = -dJ/dz
    assert math.isclose(loss.item(), -0.65, rel_tol=1e-6)
    assert torch.allclose(logits.grad, -torch.tensor([[0.175, -0.045, -0.13]]), atol=1e-6)
    assert math.isclose(stats["reward/expected"], 0.65, rel_tol=1e-6)


def test_expected_normalized_advantage_hand_worked():
    # Setup: the example above. sigma^2 = 0.5*0.35^2 + 0.3*0.15^2 + 0.2*0.65^2 = 0.1525, sigma = 0.390512;
    # the gradient is the exact group-normalized one: -pi_k (r_k - J) / sigma = -(0.175, -0.045, -0.13) / sigma.
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).requires_grad_(True)
    rewards = torch.tensor([[1.0, 0.5, 0.0]])
    sigma = math.sqrt(0.1525)
    # Run
    loss, stats = expected.loss(torch.log_softmax(logits, -1), rewards, None, {}, _config(advantage="normalized"))
    loss.backward()
    # Assert
    assert math.isclose(loss.item(), -0.65 / (sigma + expected.NORM_EPS), rel_tol=1e-6)
    assert torch.allclose(logits.grad, -torch.tensor([[0.175, -0.045, -0.13]]) / (sigma + expected.NORM_EPS),
                          atol=1e-6)
    assert math.isclose(stats["reward/std_pi"], sigma, rel_tol=1e-6)


def test_expected_loss_with_exact_kl():
    # Setup: pi = (0.5, 0.5), pi_ref = (0.25, 0.75), beta = 0.1.
    # KL = 0.5 ln 2 + 0.5 ln(2/3) = 0.143841; rewards (1, 0) -> J = 0.5; loss = -0.5 + 0.0143841.
    log_probs = torch.log(torch.tensor([[0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.75]]))
    # Run
    loss, stats = expected.loss(log_probs, torch.tensor([[1.0, 0.0]]), ref, {}, _config(kl_coef=0.1))
    # Assert
    kl = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert math.isclose(exact_kl(log_probs, ref).item(), kl, rel_tol=1e-6)
    assert math.isclose(loss.item(), -0.5 + 0.1 * kl, rel_tol=1e-5)
    assert math.isclose(stats["train/kl"], kl, rel_tol=1e-6)


def test_reinforce_loss_raw_and_batch_mean():
    # Setup: two records, sampled labels fixed by hand; pi(a) = 0.5 and 0.25, rewards 1.0 and 0.2.
    log_probs = torch.log(torch.tensor([[0.5, 0.5, 0.0 + 1e-12], [0.25, 0.5, 0.25]]))
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.2]])
    actions = torch.tensor([[0], [2]])
    raw = {"actions": actions, "reward": torch.tensor([1.0, 0.2]), "advantage": torch.tensor([1.0, 0.2])}
    centered = dict(raw, advantage=torch.tensor([0.4, -0.4]))
    # Run
    raw_loss, _ = reinforce.loss(log_probs, rewards, None, raw, _config())
    centered_loss, _ = reinforce.loss(log_probs, rewards, None, centered, _config(advantage="batch_mean"))
    # Assert: loss = -mean(A log pi(a))
    expected_raw = -(1.0 * math.log(0.5) + 0.2 * math.log(0.25)) / 2
    expected_centered = -(0.4 * math.log(0.5) - 0.4 * math.log(0.25)) / 2
    assert math.isclose(raw_loss.item(), expected_raw, rel_tol=1e-6)
    assert math.isclose(centered_loss.item(), expected_centered, rel_tol=1e-6)


def test_reinforce_prepare_samples_and_baselines():
    # Setup: a policy certain of label 3 (column 2)
    log_probs = torch.log(torch.tensor([[1e-9, 1e-9, 1.0], [1.0, 1e-9, 1e-9]]))
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    # Run
    state = reinforce.prepare(log_probs, rewards, _config(advantage="batch_mean"), generator)
    # Assert
    assert state["actions"].squeeze(1).tolist() == [2, 0]
    assert torch.allclose(state["advantage"], torch.tensor([0.25, -0.25]))
    # normalized: (r - mean) / std over the batch; rewards 1.0 and 0.5 -> std (unbiased) 0.353553
    normalized = reinforce.prepare(log_probs, rewards, _config(advantage="normalized"),
                                   torch.Generator().manual_seed(0))
    assert torch.allclose(normalized["advantage"], torch.tensor([0.25, -0.25]) / (0.35355339 + 1e-4), atol=1e-6)


def test_grpo_group_advantage_and_clipped_ratio():
    # Setup: one record, G = 4 sampled labels with rewards (1, 0, 1, 0) -> mean 0.5, std (unbiased) 0.57735.
    config = _config(clip_eps=0.2)
    old = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25]]))
    actions = torch.tensor([[0, 1, 0, 1]])
    reward = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    advantage = (reward - 0.5) / (0.57735027 + grpo.STD_EPS)
    state = {"actions": actions, "reward": reward, "advantage": advantage, "old_log_probs": old.gather(1, actions)}
    # New policy: label 1 up to 0.5 (ratio 2 -> clipped to 1.2), label 2 down to 0.1 (ratio 0.4 -> 0.8 bound).
    new = torch.log(torch.tensor([[0.5, 0.1, 0.2, 0.2]]))
    # Run
    loss, stats = grpo.loss(new, None, None, state, config)
    # Assert: positive A -> min(2A, 1.2A) = 1.2A; negative A -> min(0.4A, 0.8A) = 0.8A (more negative)
    a = 0.5 / (0.57735027 + grpo.STD_EPS)
    surrogate = (1.2 * a + 0.8 * -a + 1.2 * a + 0.8 * -a) / 4
    assert math.isclose(loss.item(), -surrogate, rel_tol=1e-5)
    assert stats["train/clip_fraction"] == 1.0


def test_grpo_prepare_normalizes_within_group():
    # Setup
    log_probs = torch.log_softmax(torch.zeros(3, 10), -1)
    rewards = torch.rand(3, 10, generator=torch.Generator().manual_seed(1))
    # Run
    state = grpo.prepare(log_probs, rewards, _config(group_size=6), torch.Generator().manual_seed(2))
    # Assert: per-group mean 0, std ~1 (unless all rewards in a group are equal)
    assert state["actions"].shape == (3, 6)
    assert torch.allclose(state["advantage"].mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(state["advantage"].std(1), torch.ones(3), atol=1e-2)
