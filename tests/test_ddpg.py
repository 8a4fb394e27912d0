"""DDPG's critic target, actor loss, Polyak update, action scaling and exploration noise against
hand-computed numbers; schedules counted in env steps; a short learning run on Pendulum."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from conftest import context, linear_actor_critic, transition

from rlrun.algos.ddpg import DDPG
from rlrun.core import Transition
from rlrun.errors import ConfigError
from rlrun.exploration import ActionNoise
from rlrun.returns import polyak_update
from rlrun.validation import check

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
ACTION_SPACE = gym.spaces.Box(-1.0, 3.0, (1,), np.float32)  # center 1, half range 2


def agent(action_space=ACTION_SPACE, make_net=linear_actor_critic, **kwargs) -> DDPG:
    settings = {**dict(gamma=0.5, learning_starts=0, batch_size=1, buffer_size=100), **kwargs}
    return DDPG(OBS_SPACE, action_space, context(make_net), **settings)


def test_critic_target_uses_the_target_actor_on_next_obs_and_stops_at_terminations():
    ddpg = agent()
    with torch.no_grad():  # the online nets move away; the target nets keep the initial weights
        ddpg.actor.net.weight.fill_(-3.0)
        ddpg.critic.net.bias.fill_(100.0)
    y = ddpg.td_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([[2.0], [2.0]]))
    # mu'(2) = 1 + 2 tanh(1) = 2.523188; Q'(2, mu'(2)) = 2 + 2 * 2.523188 + 0.5 = 7.546377
    # y = 1 + 0.5 * 7.546377 = 4.773188; terminated: y = r = 1
    assert y.tolist() == pytest.approx([1 + 0.5 * (2 + 2 * (1 + 2 * math.tanh(1.0)) + 0.5), 1.0], abs=1e-5)
    assert y.tolist() == pytest.approx([4.773188, 1.0], abs=1e-5)


def test_actor_loss_and_its_gradient_reach_the_actor_only():
    ddpg = agent()
    obs = torch.tensor([[0.0], [1.0]])
    loss = ddpg.actor_loss(obs)
    # mu(0) = 1, mu(1) = 1 + 2 tanh(0.5) = 1.924234; Q = s + 2 mu + 0.5 = 2.5, 5.348469; loss = -mean = -3.924234
    assert loss.item() == pytest.approx(-3.924234, abs=1e-5)
    loss.backward()
    # dloss/dw = -mean(2 * 2 (1 - tanh^2(0.5 s)) s) = -(0 + 4 (1 - tanh(0.5)^2)) / 2 = -1.572896
    assert ddpg.actor.net.weight.grad.item() == pytest.approx(-2 * (1 - math.tanh(0.5) ** 2), abs=1e-5)
    assert ddpg.critic.net.weight.grad is None and ddpg.critic.net.weight.requires_grad


def test_learn_step_reports_the_critic_mse_to_the_target():
    ddpg = agent()
    metrics = ddpg.observe(transition([0.0], [2.0], [1.0], [2.0]))
    # Q(0, 2) = 4.5, y = 4.773188: (Q - y)^2 = 0.074632; the actor loss uses the critic after its step
    assert metrics["q_values"] == pytest.approx(4.5)
    assert metrics["critic_loss"] == pytest.approx((4.5 - 4.773188) ** 2, abs=1e-5)
    assert set(metrics) == {"critic_loss", "q_values", "actor_loss", "charts/learning_rate"}


def test_polyak_update_moves_the_targets_tau_of_the_way():
    ddpg = agent(tau=0.1)
    with torch.no_grad():
        for param in ddpg.online_params:
            param.fill_(1.0)
        for param in ddpg.target_params:
            param.fill_(0.0)
    polyak_update(ddpg.target_params, ddpg.online_params, ddpg.tau)
    polyak_update(ddpg.target_params, ddpg.online_params, ddpg.tau)
    # 0 -> 0.1 -> 0.1 + 0.1 (1 - 0.1) = 0.19
    for param in [*ddpg.actor_target.parameters(), *ddpg.critic_target.parameters()]:
        assert torch.allclose(param, torch.full_like(param, 0.19))


def constant_actor(bias: float):
    def make_net(in_dim: int, out_dim: int) -> nn.Linear:
        layer = nn.Linear(in_dim, out_dim)
        nn.init.zeros_(layer.weight)
        nn.init.constant_(layer.bias, bias)
        return layer
    return make_net


ASYMMETRIC = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 10.0], np.float32))


@pytest.mark.parametrize("bias, expected", [(0.0, [1.0, 5.0]), (50.0, [3.0, 10.0]), (-50.0, [-1.0, 0.0])])
def test_actions_are_scaled_to_asymmetric_bounds(bias, expected):
    ddpg = agent(ASYMMETRIC, constant_actor(bias))
    action = ddpg.act(np.zeros((3, 1), np.float32), explore=False)
    assert action.shape == (3, 2)
    assert action == pytest.approx(np.array([expected] * 3))


def test_exploration_noise_is_relative_to_the_half_range_and_clipped_to_the_bounds():
    torch.manual_seed(0)
    ddpg = agent(ASYMMETRIC, constant_actor(0.0), exploration_noise=0.1)
    action = ddpg.act(np.zeros((20000, 1), np.float32))  # mu(s) = center [1, 5], half range [2, 5]
    assert action.mean(0) == pytest.approx([1.0, 5.0], abs=0.01)
    assert action.std(0) == pytest.approx([0.2, 0.5], rel=0.03)
    wild = agent(ASYMMETRIC, constant_actor(0.0), exploration_noise=5.0).act(np.zeros((1000, 1), np.float32))
    assert wild.min(0).tolist() == [-1.0, 0.0] and wild.max(0).tolist() == [3.0, 10.0]


def test_ornstein_uhlenbeck_noise_reverts_to_zero_with_the_stationary_spread():
    torch.manual_seed(0)
    sigma, theta, dt = 0.3, 0.5, 0.1  # each step keeps 1 - theta dt = 0.95 of the state
    noise = ActionNoise("ou", sigma, theta, dt, torch.device("cpu"))
    noise.sample((20000, 1))
    noise.state.fill_(1.0)
    for _ in range(20):
        noise.sample((20000, 1))
    # E[eps_20] = 0.95^20 = 0.3585; Var[eps_20] = sigma^2 dt (1 - 0.95^40) / (1 - 0.95^2)
    assert noise.state.mean().item() == pytest.approx(0.95 ** 20, abs=0.01)
    assert noise.state.var().item() == pytest.approx(0.009 * (1 - 0.95 ** 40) / (1 - 0.95 ** 2), rel=0.05)
    before = noise.state.clone()
    after = noise.sample((20000, 1)).clone()
    slope = ((after - after.mean()) * (before - before.mean())).sum() / ((before - before.mean()) ** 2).sum()
    assert slope.item() == pytest.approx(0.95, abs=0.02)  # mean reversion: E[eps' | eps] = 0.95 eps
    for _ in range(200):
        noise.sample((20000, 1))
    # stationary: mean 0, variance sigma^2 dt / (1 - 0.95^2) = 0.0923
    assert noise.state.mean().item() == pytest.approx(0.0, abs=0.01)
    assert noise.state.var().item() == pytest.approx(0.009 / (1 - 0.95 ** 2), rel=0.05)


def test_ou_noise_restarts_at_zero_where_an_episode_ended():
    ddpg = agent(noise_type="ou", exploration_noise=1.0, ou_dt=1.0, learning_starts=100)
    ddpg.noise.sample((3, 1))
    ddpg.observe(transition([0.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3))
    state = ddpg.noise.state.clone()
    ended = transition([0.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3)
    ddpg.observe(Transition(ended.obs, ended.action, ended.reward, ended.next_obs,
                            terminated=np.array([True, False, False]), truncated=np.array([False, True, False])))
    assert ddpg.noise.state[:, 0].tolist() == [0.0, 0.0, pytest.approx(state[2, 0].item())]


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="action dimensions \\[1\\] are unbounded"):
        agent(gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, np.inf], np.float32)))
    with pytest.raises(ConfigError, match="algo.noise_type='pink' is unknown"):
        check("algo", {"noise_type": "pink"}, DDPG.hyperparameter_rules)
    assert not {"policy_delay", "target_noise", "target_noise_clip"} & set(DDPG.hyperparameter_rules)  # TD3's: algo=td3
