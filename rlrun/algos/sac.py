"""SAC: soft actor-critic, an off-policy maximum-entropy actor-critic for continuous (Box) actions.

Sources: Haarnoja et al. (2018) "Soft Actor-Critic Algorithms and Applications" (arXiv:1812.05905: twin
critics, the learned temperature, the tanh-squashed policy of its appendix C); Haarnoja et al. (2018) "Soft
Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement Learning with a Stochastic Actor"; the clipped
double Q of Fujimoto et al. (2018) (rlrun.networks.TwinCritic).

The policy is a tanh-squashed Gaussian scaled to the bounds: u ~ N(m(s), sigma(s)^2), a = c + h tanh(u) with
c = (high + low) / 2 and h = (high - low) / 2, where m(s) and log sigma(s) are two heads on shared hidden
layers (log sigma clipped to [-20, 2], as SB3 does). Its log-probability follows from the change of variables
of the tanh (appendix C), for the action in units of h (so the target entropy does not depend on the bounds'
scale, as in SB3):

    log pi(a|s) = sum_j [ log N(u_j; m_j(s), sigma_j(s)^2) - log(1 - tanh(u_j)^2) ]

For a minibatch (s, a, r, s', terminated) drawn uniformly from the replay buffer, with target critics Q_i'
(no gradient flows through y) and the temperature alpha = exp(log alpha):

    y         = r + gamma (1 - terminated) (min_i Q_i'(s', a') - alpha log pi(a'|s')),   a' ~ pi(.|s')
    L_critic  = mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2
    L_actor   = mean (alpha log pi(a~|s) - min_i Q_i(s, a~)),      a~ = c + h tanh(m(s) + sigma(s) eps),
                                                                   eps ~ N(0, I) (reparameterized)
    L_alpha   = -mean alpha (log pi(a~|s) + H_target)              (log pi without gradient; autotune=true)
    theta_i' <- theta_i' + tau (theta_i - theta_i')                (Polyak averaging of both critics' targets)

The temperature step lowers alpha while the policy's entropy -log pi is above the target entropy H_target
(default -dim(A)) and raises it while below. s' is the true next observation: a time-limit truncation
bootstraps from it, a termination from nothing. Uniformly random actions for the first `learning_starts`
env steps, then samples of pi; the deterministic (evaluation) action is c + h tanh(m(s)). `gradient_steps`
updates every `train_every` env steps (rlrun.off_policy).

With use_sde=true the policy explores by gSDE (rlrun.networks.StateDependentNoise: Raffin, Kober and Stulp 2021,
as Stable-Baselines3 implements it for SAC): u = m(s) + z(s) W, W = sigma * E, a random linear map of the
policy's last hidden features z(s), here with their gradient (SB3's learn_features=True for SAC), so that
u ~ N(m(s), sigma(s)^2) with sigma_j(s)^2 = sum_k z_k(s)^2 sigma_kj^2, and log pi(a|s) is the formula above with
that sigma(s); m(s) is clipped to [-2, 2] (SB3's clip_mean). While acting, each env keeps its E for
`sde_sample_every` env steps (default: until the next round of updates, rlrun.exploration.HeldNoise); each
sample in the losses (a' of the target, a~ of the actor's loss) draws one E for its whole minibatch, as SB3
does. The actor's loss reaches sigma through W (reparameterized).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform

from rlrun.core import RunContext, Transition
from rlrun.errors import ConfigError
from rlrun.exploration import HeldNoise
from rlrun.networks import BoundedActor, MultiHeadMLP, StateDependentNoise, TwinCritic, gradient_step, target_copy
from rlrun.off_policy import Minibatch, OffPolicyActorCritic
from rlrun.returns import polyak_update
from rlrun.validation import BOOLEAN, NUMBER, POSITIVE, POSITIVE_INT, optional

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
SDE_MEAN_LIMIT = 2.0  # |m(s)| <= 2 under gSDE: tanh(2) = 0.96, so the mean cannot saturate the squashing


def tanh_gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """log pi of tanh(u) for u ~ N(mean, exp(log_std)^2), summed over the action dimensions:
    log N(u) - log(1 - tanh(u)^2), the second term in torch's numerically stable form."""
    jacobian = TanhTransform().log_abs_det_jacobian(u, torch.tanh(u))
    return (Normal(mean, log_std.exp(), validate_args=False).log_prob(u) - jacobian).sum(-1)


class SquashedGaussianPolicy(BoundedActor):
    """pi(.|s): a = c + h tanh(u), u ~ N(m(s), sigma(s)^2); `net(s)` returns (m(s), log sigma(s))."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action c + h tanh(m(s))."""
        mean, _ = self.net(obs)
        return self.squash(mean)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized sample a ~ pi(.|s) and its log pi(a|s)."""
        mean, log_std = self.net(obs)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return self.squash(u), tanh_gaussian_log_prob(mean, log_std, u)


class StateDependentNoisePolicy(BoundedActor):
    """pi(.|s) with gSDE: a = c + h tanh(u), u = m(s) + z(s) W; `net` is a MultiHeadMLP with one head, m(s), on the
    features z(s)."""

    def __init__(self, net: MultiHeadMLP, low: torch.Tensor, high: torch.Tensor, log_std_init: float):
        super().__init__(net, low, high)
        mean_head = net.heads[0]
        self.sde = StateDependentNoise(mean_head.in_features, mean_head.out_features, log_std_init)

    def mean_and_features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.trunk(obs)  # with their gradient: the noise's scale also shapes the features
        return self.net.heads[0](features).clamp(-SDE_MEAN_LIMIT, SDE_MEAN_LIMIT), features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action c + h tanh(m(s))."""
        return self.squash(self.mean_and_features(obs)[0])

    def sample(self, obs: torch.Tensor, unit_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """a ~ pi(.|s) with the noise matrix E (one for all rows, or one per row; None: one drawn now) and log pi(a|s)."""
        mean, features = self.mean_and_features(obs)
        u = mean + self.sde.noise(features, self.sde.draw() if unit_noise is None else unit_noise)
        return self.squash(u), tanh_gaussian_log_prob(mean, self.sde.std(features).log(), u)


class Temperature(nn.Module):
    """alpha = exp(log alpha), learned in log space so that it stays positive."""

    def __init__(self, alpha: float, learned: bool):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)), requires_grad=learned)

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


class SAC(OffPolicyActorCritic):
    hyperparameter_rules = {
        **OffPolicyActorCritic.shared_rules, "actor_lr": POSITIVE, "critic_lr": POSITIVE, "alpha_lr": POSITIVE,
        "alpha": POSITIVE, "autotune": BOOLEAN, "target_entropy": optional(NUMBER), "use_sde": BOOLEAN,
        "sde_sample_every": optional(POSITIVE_INT), "sde_log_std_init": NUMBER, "compile": BOOLEAN}

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, context: RunContext,
                 gamma: float = 0.99, actor_lr: float = 3e-4, critic_lr: float = 3e-4, alpha_lr: float = 3e-4,
                 buffer_size: int = 1_000_000, batch_size: int = 256, learning_starts: int = 100,
                 train_every: int = 1, gradient_steps: int = 1, tau: float = 0.005, alpha: float = 1.0,
                 autotune: bool = True, target_entropy: float | None = None, use_sde: bool = False,
                 sde_sample_every: int | None = None, sde_log_std_init: float = -3.0, lr_schedule: str = "constant",
                 compile: bool = False):
        super().__init__("sac", observation_space, action_space, context, gamma, buffer_size, batch_size,
                         learning_starts, train_every, gradient_steps, tau, lr_schedule, compile)
        make_net = context.make_net
        self.use_sde = use_sde
        if use_sde:
            self.actor = StateDependentNoisePolicy(self.sde_policy_net(make_net), self.low, self.high,
                                                   sde_log_std_init).to(self.device)
            self.exploration = HeldNoise(self.actor.sde.draw, sde_sample_every or train_every, self.device)
        else:
            self.actor = SquashedGaussianPolicy(make_net(self.obs_dim, (self.action_dim, self.action_dim)),
                                                self.low, self.high).to(self.device)
        self.critic = TwinCritic(make_net, self.obs_dim, self.action_dim).to(self.device)
        self.critic_target = target_copy(TwinCritic(make_net, self.obs_dim, self.action_dim), self.critic)
        self.temperature = Temperature(alpha, learned=autotune).to(self.device)
        self.target_entropy = -float(self.action_dim) if target_entropy is None else float(target_entropy)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, fused=True)
        self.checkpointed = ("actor", "critic", "critic_target", "actor_optimizer", "critic_optimizer",
                             "temperature", *(("exploration",) if use_sde else ()))
        self.alpha_optimizer = None
        if autotune:
            self.alpha_optimizer = torch.optim.Adam(self.temperature.parameters(), lr=alpha_lr)
            self.checkpointed += ("alpha_optimizer",)

    def sde_policy_net(self, make_net: Any) -> MultiHeadMLP:
        net = make_net(self.obs_dim, (self.action_dim,))
        if not isinstance(net, MultiHeadMLP):
            raise ConfigError("algo.use_sde=true reads the policy's last hidden layer, which needs rlrun's mlp network "
                              "(network=mlp); set algo.use_sde=false to use this network")
        return net

    def policy_action(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """a ~ pi(.|s) when exploring (under gSDE with each env's E), else c + h tanh(m(s))."""
        if not explore:
            return self.actor(obs)
        if not self.use_sde:
            return self.actor.sample(obs)[0]
        return self.actor.sample(obs, self.exploration(len(obs)))[0]

    def observe(self, t: Transition) -> dict[str, float]:
        before = self.env_steps
        metrics = super().observe(t)
        if self.use_sde:
            self.exploration.advance(before, self.env_steps)
        return metrics

    def td_target(self, reward: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor,
                  alpha: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - terminated) (min_i Q_i'(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s')."""
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_obs)
            soft_value = self.critic_target.min(next_obs, next_action) - alpha * next_log_prob
            return reward + self.gamma * (1.0 - terminated) * soft_value

    def actor_loss(self, obs: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean (alpha log pi(a~|s) - min_i Q_i(s, a~)) over reparameterized a~ ~ pi(.|s), and those log pi;
        the critics' parameters take no gradient from it (rlrun.off_policy freezes them)."""
        action, log_prob = self.actor.sample(obs)
        return (alpha * log_prob - self.critic.min(obs, action)).mean(), log_prob.detach()

    def temperature_loss(self, log_prob: torch.Tensor) -> torch.Tensor:
        """-mean alpha (log pi + H_target): its gradient raises alpha while the entropy is below the target."""
        return -(self.temperature() * (log_prob + self.target_entropy)).mean()

    def critic_loss(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
                    next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2 at the current alpha, and the mean Q_1(s, a)."""
        y = self.td_target(reward, terminated, next_obs, self.temperature().detach())
        q1, q2 = self.critic(obs, action)
        return nn.functional.mse_loss(q1, y) + nn.functional.mse_loss(q2, y), q1.detach().mean()

    def update(self, batch: Minibatch) -> dict[str, torch.Tensor]:
        alpha = self.temperature().detach()
        critic_loss, q_mean = self.critic_loss(batch.obs, batch.action, batch.reward, batch.terminated, batch.next_obs)
        gradient_step(self.critic_optimizer, critic_loss)
        actor_loss, log_prob = self.actor_loss(batch.obs, alpha)
        gradient_step(self.actor_optimizer, actor_loss)
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
                   "entropy": -log_prob.mean(), "q_values": q_mean}
        if self.alpha_optimizer is not None:
            alpha_loss = self.temperature_loss(log_prob)
            gradient_step(self.alpha_optimizer, alpha_loss)
            metrics["alpha_loss"] = alpha_loss.detach()
        polyak_update(self.critic_target.parameters(), self.critic.parameters(), self.tau)
        return metrics
