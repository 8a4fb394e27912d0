"""REINFORCE's returns-to-go, loss and actions against hand-computed numbers."""

from __future__ import annotations

import math
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from conftest import context
from rlrun.algos.reinforce import Reinforce
from rlrun.core import Transition
from rlrun.errors import ConfigError
from rlrun.networks import mlp
from rlrun.validation import check

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)


def constant_net(in_dim: int, out_dim: int, bias: float = 0.0) -> nn.Module:
    """A linear layer with zero weights: outputs `bias` for every input (a uniform policy when 0)."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, bias)
    return layer


def agent(**kwargs) -> Reinforce:
    defaults = dict(gamma=0.5, episodes_per_update=1, baseline="none", normalize_returns=False)
    return Reinforce(OBS_SPACE, gym.spaces.Discrete(2), context(kwargs.pop("make_net", constant_net)), **{**defaults, **kwargs})


def step(obs, action, reward, next_obs, terminated=False, truncated=False) -> Transition:
    return Transition(np.array([[obs]], np.float32), np.array([action]), np.array([reward], np.float32),
                      np.array([[next_obs]], np.float32), np.array([terminated]), np.array([truncated]))


def test_returns_to_go_after_a_termination():
    # R_2 = 3, R_1 = 2 + 0.5 * 3 = 3.5, R_0 = 1 + 0.5 * 3.5 = 2.75
    _, _, returns = agent().returns_to_go([(0.0, 0, 1.0), (1.0, 0, 2.0), (2.0, 0, 3.0)], bootstrap_obs=None)
    np.testing.assert_allclose(returns, [2.75, 3.5, 3.0])


def test_returns_to_go_bootstrap_from_the_value_at_a_truncation():
    reinforce = agent(baseline="value", make_net=partial(constant_net, bias=4.0))  # V(s) = 4 everywhere
    _, _, returns = reinforce.returns_to_go([(0.0, 0, 1.0), (1.0, 0, 2.0)], bootstrap_obs=np.array([2.0]))
    # R_1 = 2 + 0.5 * V(s_2) = 4, R_0 = 1 + 0.5 * 4 = 3
    np.testing.assert_allclose(returns, [3.0, 4.0])


def test_policy_loss_is_minus_log_prob_times_return_summed_over_the_episode():
    reinforce = agent()
    assert reinforce.observe(step(0, 0, 1.0, 1)) == {}
    assert reinforce.observe(step(1, 1, 2.0, 2)) == {}
    metrics = reinforce.observe(step(2, 0, 3.0, 3, terminated=True))
    # uniform policy: log pi(a|s) = log 1/2 for every step; returns 2.75, 3.5, 3
    assert metrics["policy_loss"] == pytest.approx(-math.log(0.5) * (2.75 + 3.5 + 3.0), rel=1e-5)
    assert metrics["entropy"] == pytest.approx(math.log(2), rel=1e-5)
    assert "value_loss" not in metrics


def test_mean_baseline_and_value_loss():
    reinforce = agent(baseline="value", make_net=partial(constant_net, bias=1.0))  # V = 1, logits equal
    reinforce.observe(step(0, 0, 1.0, 1))
    metrics = reinforce.observe(step(1, 1, 2.0, 2, terminated=True))
    # returns 2, 2; weights R - V = 1, 1; value loss mean((1 - 2)^2) = 1
    assert metrics["policy_loss"] == pytest.approx(-math.log(0.5) * 2.0, rel=1e-5)
    assert metrics["value_loss"] == pytest.approx(1.0, rel=1e-5)
    mean_baseline = agent(baseline="mean")
    mean_baseline.observe(step(0, 0, 1.0, 1))
    assert mean_baseline.observe(step(1, 1, 2.0, 2, terminated=True))["policy_loss"] == pytest.approx(0.0, abs=1e-6)


def test_a_gradient_step_makes_the_rewarded_action_more_likely():
    reinforce = agent(lr=0.1)
    reinforce.observe(step(0, 1, 1.0, 1, terminated=True))  # action 1 earned a positive return
    logits = reinforce.policy(torch.zeros(1, 1))
    assert logits[0, 1] > logits[0, 0]


def test_updates_after_episodes_per_update_episodes_and_drops_stale_steps():
    reinforce = Reinforce(OBS_SPACE, gym.spaces.Discrete(2), context(constant_net), episodes_per_update=2, baseline="none")
    two_envs = Transition(np.zeros((2, 1), np.float32), np.array([0, 0]), np.ones(2, np.float32),
                          np.ones((2, 1), np.float32), np.array([True, False]), np.array([False, False]))
    assert reinforce.observe(two_envs) == {}  # one finished episode of two
    assert len(reinforce.finished) == 1 and len(reinforce.running[1]) == 1
    assert reinforce.observe(two_envs) != {}  # the second one: update
    assert reinforce.finished == [] and reinforce.running == [[], []]


def test_box_actions_are_gaussian_samples_around_the_mean():
    torch.manual_seed(0)
    reinforce = Reinforce(OBS_SPACE, gym.spaces.Box(-2.0, 2.0, (3,), np.float32), context(partial(constant_net, bias=0.5)))
    obs = np.zeros((4000, 1), np.float32)
    samples = reinforce.act(obs)
    assert samples.shape == (4000, 3)
    np.testing.assert_allclose(samples.mean(0), 0.5, atol=0.05)
    np.testing.assert_allclose(samples.std(0), 1.0, atol=0.05)  # log_std starts at 0
    np.testing.assert_allclose(reinforce.act(obs[:2], explore=False), 0.5)


def test_discrete_samples_follow_the_softmax():
    torch.manual_seed(0)
    reinforce = Reinforce(OBS_SPACE, gym.spaces.Discrete(3), context(mlp))
    obs = np.full((20000, 1), 0.3, np.float32)
    probs = torch.softmax(reinforce.policy(torch.as_tensor(obs[:1])), -1).detach().numpy()[0]
    counts = np.bincount(reinforce.act(obs), minlength=3) / len(obs)
    np.testing.assert_allclose(counts, probs, atol=0.015)
    assert reinforce.act(obs[:1], explore=False)[0] == probs.argmax()


def test_unknown_baseline_is_a_config_error():
    with pytest.raises(ConfigError, match="algo.baseline"):
        check("algo", {"baseline": "median"}, Reinforce.hyperparameter_rules)


def test_state_dict_round_trip_gives_the_same_policy(tmp_path):
    from rlrun import checkpoint

    source = Reinforce(OBS_SPACE, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), context(mlp), baseline="value")
    source.head.log_std.data.fill_(-0.7)
    path = tmp_path / "agent.pt"
    checkpoint.save(path, {"agent": source.state_dict()})
    restored = Reinforce(OBS_SPACE, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), context(mlp), baseline="value")
    restored.load_state_dict(checkpoint.load(path)["agent"])
    obs = np.linspace(-1, 1, 10, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(restored.act(obs, explore=False), source.act(obs, explore=False))
    assert torch.equal(restored.head.log_std, source.head.log_std)
    x = torch.as_tensor(obs)
    assert torch.equal(restored.value(x), source.value(x))
