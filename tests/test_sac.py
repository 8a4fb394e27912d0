"""SAC's tanh-Gaussian log-probability against a numerical change of variables, its soft target and the
temperature loss's gradient against hand-computed numbers; gSDE's state-dependent noise against its variance
and its schedule; a checkpoint round trip; a short learning run on Pendulum."""

from __future__ import annotations

import math
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from conftest import context, transition

from rlrun.algos.sac import SAC, tanh_gaussian_log_prob
from rlrun.errors import ConfigError
from rlrun.networks import network

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
ACTION_SPACE = gym.spaces.Box(-1.0, 3.0, (1,), np.float32)  # center 1, half range 2


class MeanAndLogStd(nn.Module):
    """m(s) = 0.5 s, log sigma(s) = log_std: the policy network's two heads."""

    def __init__(self, log_std: float):
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.log_std = log_std
        with torch.no_grad():
            self.linear.weight.fill_(0.5)
            self.linear.bias.fill_(0.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.linear(obs)
        return mean, torch.full_like(mean, self.log_std)


def hand_nets(log_std: float):
    """Policy heads as MeanAndLogStd; both critics Q_i(s, a) = s + 2 a + 0.5."""
    def make_net(in_dim, out_dim):
        if isinstance(out_dim, tuple):
            return MeanAndLogStd(log_std)
        layer = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
            layer.bias.fill_(0.5)
        return layer
    return make_net


def agent(make_net=None, **kwargs) -> SAC:
    settings = {**dict(gamma=0.5, learning_starts=0, batch_size=1, buffer_size=100), **kwargs}
    return SAC(OBS_SPACE, ACTION_SPACE, context(make_net or hand_nets(-1.0)), **settings)


def test_log_probability_is_the_gaussian_density_over_the_tanh_jacobian():
    torch.manual_seed(0)
    mean = torch.tensor([[0.3, -1.2, 2.0], [0.0, 0.5, -3.0]], dtype=torch.float64)
    log_std = torch.tensor([[-0.5, 0.2, 0.0], [-2.0, 0.7, -1.0]], dtype=torch.float64)
    u = mean + log_std.exp() * torch.randn_like(mean)
    got = tanh_gaussian_log_prob(mean, log_std, u)
    # p(a) = N(u; m, sigma^2) / |d tanh(u) / du|, the derivative by central differences
    h = 1e-6
    jacobian = (torch.tanh(u + h) - torch.tanh(u - h)) / (2 * h)
    gaussian = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    assert got.tolist() == pytest.approx((gaussian - jacobian.log()).sum(-1).tolist(), abs=1e-6)
    squashed = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.transforms.TanhTransform())
    assert got.tolist() == pytest.approx(squashed.log_prob(torch.tanh(u)).sum(-1).tolist(), abs=1e-6)


def test_log_probability_stays_finite_where_tanh_saturates():
    u = torch.tensor([[20.0, -30.0]])
    log_prob = tanh_gaussian_log_prob(torch.zeros(1, 2), torch.zeros(1, 2), u)
    # log(1 - tanh(u)^2) = 2 (log 2 - |u| - log(1 + e^{-2|u|})): -38.61 and -58.61
    expected = sum(-0.5 * x ** 2 - 0.5 * math.log(2 * math.pi) - 2 * (math.log(2) - abs(x)) for x in (20.0, -30.0))
    assert log_prob.item() == pytest.approx(expected, rel=1e-6)


def test_actions_are_squashed_into_the_bounds():
    torch.manual_seed(0)
    sac = agent(hand_nets(1.0))
    obs = torch.full((10000, 1), 2.0)
    assert sac.policy_action(obs[:1], explore=False).item() == pytest.approx(1 + 2 * math.tanh(1.0))
    action, log_prob = sac.actor.sample(obs)
    assert action.min().item() >= -1.0 and action.max().item() <= 3.0 and action.std().item() > 0.5
    assert torch.isfinite(log_prob).all()


def test_soft_target_subtracts_the_temperature_times_the_log_probability():
    torch.manual_seed(0)
    sac = agent(hand_nets(-5.0), alpha=0.1, autotune=False)  # sigma = e^-5: a' = c + h tanh(m(s')) to 1e-4
    with torch.no_grad():
        sac.critic_target.q2.net.weight.copy_(torch.tensor([[1.0, 1.0]]))  # Q_2'(s, a) = s + a + 0.5
    ones = torch.ones(20000)
    y = sac.td_target(ones, torch.zeros(20000), torch.full((20000, 1), 2.0), sac.temperature())
    # m(2) = 1, a' = 1 + 2 tanh(1) = 2.523188; Q_1' = 7.546377, Q_2' = 5.023188: min 5.023188
    # E[log pi(a'|s')] = E[-eps^2 / 2] - log sigma - log(2 pi) / 2 - log(1 - tanh(1)^2) = -0.5 + 5 - 0.918939 + 0.867501
    log_pi = -0.5 + 5 - 0.5 * math.log(2 * math.pi) - math.log(1 - math.tanh(1.0) ** 2)
    assert y.mean().item() == pytest.approx(1 + 0.5 * (2 + 1 + 2 * math.tanh(1.0) + 0.5 - 0.1 * log_pi), abs=2e-3)
    assert y.mean().item() == pytest.approx(3.289166, abs=2e-3)
    terminal = sac.td_target(ones[:2], torch.ones(2), torch.full((2, 1), 2.0), sac.temperature())
    assert terminal.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("log_prob, alpha_rises", [(1.5, True), (-1.5, False)])
def test_temperature_rises_while_the_entropy_is_below_the_target(log_prob, alpha_rises):
    sac = agent(alpha=0.5)  # target entropy -dim(A) = -1
    loss = sac.temperature_loss(torch.full((4,), log_prob))
    # L = -alpha (log pi + H_target); dL/dlog(alpha) = -alpha (log pi - 1): -0.25 at entropy -1.5 (below -1), 1.25 above
    loss.backward()
    assert sac.temperature.log_alpha.grad.item() == pytest.approx(-0.5 * (log_prob - 1.0))
    sac.alpha_optimizer.step()
    assert (sac.temperature().item() > 0.5) == alpha_rises


def test_update_reports_the_losses_the_temperature_and_the_entropy():
    sac = agent(alpha=0.5)
    metrics = sac.observe(transition([0.0], [2.0], [1.0], [2.0]))
    assert set(metrics) == {"critic_loss", "actor_loss", "alpha", "alpha_loss", "entropy", "q_values",
                            "charts/learning_rate"}
    assert metrics["alpha"] == pytest.approx(0.5)  # the temperature this update used; it moves after
    assert metrics["q_values"] == pytest.approx(4.5)  # Q_1(0, 2) = 0 + 4 + 0.5
    assert sac.temperature().item() != pytest.approx(0.5)
    fixed = agent(alpha=0.5, autotune=False)
    assert "alpha_loss" not in fixed.observe(transition([0.0], [2.0], [1.0], [2.0]))
    assert fixed.temperature().item() == pytest.approx(0.5)


def test_target_critics_follow_by_polyak_averaging():
    sac = agent(tau=0.1)
    with torch.no_grad():
        for param in sac.critic_target.parameters():
            param.add_(1.0)
    targets = [param.clone() for param in sac.critic_target.parameters()]
    sac.observe(transition([0.0], [2.0], [1.0], [2.0]))
    for before, after, online in zip(targets, sac.critic_target.parameters(), sac.critic.parameters()):
        assert torch.allclose(after, before + 0.1 * (online - before), atol=1e-6)


def sde_agent(**kwargs) -> SAC:
    """SAC with gSDE on 2-D actions in [-1, 1]; for s >= 0 the policy's features are z(s) = (s, 2s, 0, ..., 0) (its
    relu trunk) and m(s) = (0.5 s, 0.5 s) (its head)."""
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    settings = {**dict(gamma=0.5, learning_starts=0, batch_size=1, buffer_size=100, use_sde=True, train_every=4,
                       sde_log_std_init=-1.0), **kwargs}
    sac = SAC(OBS_SPACE, space, context(partial(network, activation="relu")), **settings)
    trunk, (mean_head,) = sac.actor.net.trunk, sac.actor.net.heads
    with torch.no_grad():
        for param in sac.actor.net.parameters():
            param.zero_()
        trunk[0][0].weight[:3] = torch.tensor([[1.0], [2.0], [0.0]])  # the trunk's first layer; relu keeps s >= 0
        trunk[0][-1].weight[:3, :3] = torch.eye(3)
        mean_head.weight[:, 0] = 0.5
    return sac


def test_sde_noise_is_linear_in_the_features_with_the_variance_of_its_log_probability():
    torch.manual_seed(0)
    sac = sde_agent()
    with torch.no_grad():
        sac.actor.sde.log_std[:3] = torch.tensor([[-1.0, 0.0], [-2.0, -0.5], [3.0, 3.0]])
    obs = torch.tensor([[0.8]])
    mean, features = sac.actor.mean_and_features(obs)
    assert features[0, :3].tolist() == pytest.approx([0.8, 1.6, 0.0]) and features[0, 3:].abs().max() == 0
    assert features.requires_grad  # SAC's noise shapes the features too (SB3's learn_features=True); PPO's does not
    assert mean[0].tolist() == pytest.approx([0.4, 0.4])
    # sigma_j(s)^2 = sum_k z_k^2 sigma_kj^2 + 1e-6: the third feature is 0, so its large sigma adds nothing
    variance = [0.64 * math.exp(-2.0) + 2.56 * math.exp(-4.0) + 1e-6, 0.64 + 2.56 * math.exp(-1.0) + 1e-6]
    noise = sac.actor.sde.draw(50000)
    u = mean + (features.unsqueeze(-2) @ (sac.actor.sde.log_std.exp() * noise)).squeeze(-2)
    assert u.mean(0).tolist() == pytest.approx([0.4, 0.4], abs=0.02)
    assert u.var(0).tolist() == pytest.approx(variance, rel=0.03)
    action, log_prob = sac.actor.sample(obs.expand(50000, 1), noise)
    assert torch.allclose(action, torch.tanh(u), atol=1e-6)  # bounds [-1, 1]: a = tanh(u)
    expected = tanh_gaussian_log_prob(mean, 0.5 * torch.tensor(variance).log(), u)
    assert torch.allclose(log_prob, expected, atol=1e-5)


def test_sde_mean_is_clipped_and_the_evaluation_action_has_no_noise():
    sac = sde_agent()
    obs = torch.tensor([[10.0]])  # m(s) = 5, clipped to 2
    assert sac.actor.mean_and_features(obs)[0].tolist() == [[2.0, 2.0]]
    assert sac.policy_action(obs, explore=False)[0].tolist() == pytest.approx([math.tanh(2.0)] * 2)


def test_each_env_keeps_its_sde_noise_until_the_next_round_of_updates():
    torch.manual_seed(0)
    sac = sde_agent(batch_size=50)  # no update (the buffer holds fewer rows): the noise schedule alone
    obs = np.full((3, 1), 0.5, np.float32)
    first = sac.act(obs)
    assert len(np.unique(first[:, 0])) == 3  # one noise matrix per env
    sac.observe(transition([0.5] * 3, [0.0] * 3, [0.0] * 3, [0.5] * 3))  # 3 env steps: no round of 4 yet
    assert np.array_equal(sac.act(obs), first)
    sac.observe(transition([0.5] * 3, [0.0] * 3, [0.0] * 3, [0.5] * 3))  # 6 env steps: a round passed
    assert not np.array_equal(sac.act(obs), first)
    every_step = sde_agent(batch_size=50, sde_sample_every=1)
    actions = every_step.act(obs)
    every_step.observe(transition([0.5] * 3, [0.0] * 3, [0.0] * 3, [0.5] * 3))
    assert not np.array_equal(every_step.act(obs), actions)


def test_the_actor_loss_moves_the_sde_noise_scale():
    torch.manual_seed(0)
    sac = sde_agent(batch_size=8)
    for _ in range(8):
        sac.replay_buffer.add(obs=np.full((1, 1), 0.8, np.float32), action=np.zeros((1, 2), np.float32),
                              reward=np.zeros(1, np.float32), next_obs=np.full((1, 1), 0.8, np.float32),
                              terminated=np.zeros(1, np.float32))
    loss, _ = sac.actor_loss(sac.minibatch().obs, sac.temperature().detach())
    loss.backward()
    grad = sac.actor.sde.log_std.grad
    assert grad[:2].abs().min() > 0  # through the log-probability and through the reparameterized u = m + z W
    assert grad[2:].abs().max() == 0  # features that are 0 at s = 0.8 take no gradient


def test_sde_needs_the_mlp_network():
    with pytest.raises(ConfigError, match="algo.use_sde=true reads the policy's last hidden layer.*network=mlp"):
        SAC(OBS_SPACE, ACTION_SPACE, context(hand_nets(-1.0)), use_sde=True)
