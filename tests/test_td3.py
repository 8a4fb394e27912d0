"""TD3's clipped double-Q target with and without target policy smoothing, its delayed policy updates and
actor loss against hand-computed numbers; a checkpoint round trip; a short learning run on Pendulum."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import context, linear_actor_critic, transition

from rlrun.algos.td3 import TD3

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
ACTION_SPACE = gym.spaces.Box(-1.0, 3.0, (1,), np.float32)  # center 1, half range 2


def agent(make_net=linear_actor_critic, **kwargs) -> TD3:
    """Actor f(s) = 0.5 s (mu(s) = 1 + 2 tanh(0.5 s)); both critics Q_i(s, a) = s + 2 a + 0.5, then the target
    Q_2'(s, a) = s + a + 0.5."""
    settings = {**dict(gamma=0.5, learning_starts=0, batch_size=1, buffer_size=100), **kwargs}
    td3 = TD3(OBS_SPACE, ACTION_SPACE, context(make_net), **settings)
    if make_net is linear_actor_critic:
        with torch.no_grad():
            td3.critic_target.q2.net.weight.copy_(torch.tensor([[1.0, 1.0]]))
    return td3


def test_target_without_smoothing_takes_the_smaller_target_critic_and_stops_at_terminations():
    td3 = agent(target_noise=0.0)
    with torch.no_grad():  # the online nets move away; the target nets keep their weights
        td3.actor.net.weight.fill_(-3.0)
        td3.critic.q1.net.bias.fill_(100.0)
    y = td3.td_target(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([[2.0], [-2.0], [2.0]]))
    # s' = 2: mu'(2) = 1 + 2 tanh(1) = 2.523188; Q_1' = 2 + 2 * 2.523188 + 0.5 = 7.546377, Q_2' = 2 + 2.523188 + 0.5
    # = 5.023188: y = 1 + 0.5 * 5.023188 = 3.511594
    # s' = -2: mu'(-2) = -0.523188; Q_1' = -2 - 1.046377 + 0.5 = -2.546377, Q_2' = -2.023188: y = 1 - 1.273188 = -0.273188
    # terminated: y = r = 1
    mu_plus, mu_minus = 1 + 2 * math.tanh(1.0), 1 - 2 * math.tanh(1.0)
    assert y.tolist() == pytest.approx([1 + 0.5 * (2 + mu_plus + 0.5), 1 + 0.5 * (-2 + 2 * mu_minus + 0.5), 1.0], abs=1e-5)
    assert y.tolist() == pytest.approx([3.511594, -0.273188, 1.0], abs=1e-5)


def test_target_smoothing_noise_stays_inside_its_clip():
    torch.manual_seed(0)
    td3 = agent(target_noise=0.2, target_noise_clip=0.5)
    with torch.no_grad():
        td3.critic_target.q2.net.weight.copy_(torch.tensor([[1.0, 2.0]]))  # Q_1' = Q_2' = s + 2 a + 0.5
    zeros = torch.zeros(20000)
    y = td3.td_target(zeros, zeros, torch.zeros((20000, 1)))
    # mu'(0) = 1 (inside the bounds -1, 3); a' = 1 + 2 clip(N(0, 0.2^2), -0.5, 0.5) in [0, 2]; y = 0.5 (2 a' + 0.5)
    next_action = (y / 0.5 - 0.5) / 2
    assert next_action.min().item() == pytest.approx(0.0) and next_action.max().item() == pytest.approx(2.0)
    assert next_action.mean().item() == pytest.approx(1.0, abs=0.01)
    # std of 2 clip(0.2 z, -0.5, 0.5), z ~ N(0, 1) clipped at 2.5: 0.4 * 0.9880 = 0.3952 (numerical integration)
    assert next_action.std().item() == pytest.approx(0.3952, abs=0.006)


def test_target_smoothing_is_clipped_to_the_action_bounds():
    torch.manual_seed(0)
    td3 = agent(target_noise=0.2, target_noise_clip=0.5)
    zeros = torch.zeros(20000)
    y = td3.td_target(zeros, zeros, torch.full((20000, 1), 2.0))
    # mu'(2) = 2.523188 + 2 clip(noise, -0.5, 0.5), clipped to <= 3; y = 0.5 min(2 + 2 a' + 0.5, 2 + a' + 0.5)
    next_action = y / 0.5 - 2.5
    assert next_action.max().item() == pytest.approx(3.0)
    assert next_action.min().item() == pytest.approx(2.523188 - 1.0, abs=1e-5)


def test_actor_loss_climbs_the_first_critic_and_reaches_the_actor_only():
    td3 = agent()
    with torch.no_grad():
        td3.critic.q2.net.bias.fill_(-100.0)  # the actor loss does not look at Q_2
    loss = td3.actor_loss(torch.tensor([[0.0], [1.0]]))
    # mu(0) = 1, mu(1) = 1.924234; Q_1 = s + 2 mu + 0.5 = 2.5, 5.348469; loss = -mean = -3.924234
    assert loss.item() == pytest.approx(-3.924234, abs=1e-5)
    loss.backward()
    assert td3.actor.net.weight.grad.item() == pytest.approx(-2 * (1 - math.tanh(0.5) ** 2), abs=1e-5)
    assert all(param.grad is None and param.requires_grad for param in td3.critic.parameters())


def test_critic_loss_is_the_sum_of_both_critics_squared_errors():
    td3 = agent(target_noise=0.0, policy_delay=2)
    with torch.no_grad():
        td3.critic.q2.net.bias.fill_(1.5)  # Q_2(0, 2) = 5.5
    metrics = td3.observe(transition([0.0], [2.0], [1.0], [2.0]))
    # y = 3.511594 (first test); Q_1(0, 2) = 4.5, Q_2(0, 2) = 5.5: (4.5 - y)^2 + (5.5 - y)^2 = 0.977946 + 3.953758
    assert metrics["critic_loss"] == pytest.approx((4.5 - 3.511594) ** 2 + (5.5 - 3.511594) ** 2, abs=1e-4)
    assert metrics["q_values"] == pytest.approx(4.5)
    assert "actor_loss" not in metrics  # update 1 of policy_delay 2: the critics only


def test_actor_and_targets_move_every_policy_delay_critic_updates():
    td3 = agent(policy_delay=2)
    targets = [param.clone() for param in td3.target_params]
    td3.observe(transition([1.0], [2.0], [1.0], [2.0]))  # update 1: the critics only
    assert td3.updates == 1 and "step" not in td3.actor_optimizer.state_dict()["state"].get(0, {})
    assert all(torch.equal(a, b) for a, b in zip(td3.target_params, targets))
    td3.observe(transition([1.0], [2.0], [1.0], [2.0]))  # update 2: the actor, then every target
    assert td3.actor_optimizer.state_dict()["state"][0]["step"].item() == 1
    assert td3.critic_optimizer.state_dict()["state"][0]["step"].item() == 2
    assert all(not torch.equal(a, b) for a, b in zip(td3.target_params, targets))
