"""TD3: twin delayed deep deterministic policy gradient, an off-policy actor-critic for continuous (Box) actions.

Source: Fujimoto, van Hoof & Meger (2018) "Addressing Function Approximation Error in Actor-Critic Methods"
(Algorithm 1). DDPG (algo=ddpg) with three changes against the overestimation of Q:

- clipped double Q: two critics Q_1, Q_2 regress on one target built from the smaller of their target
  networks' values (rlrun.networks.TwinCritic);
- target policy smoothing: the target action is the target actor's plus clipped Gaussian noise;
- delayed policy updates: the actor and all target networks move once every `policy_delay` critic updates.

The actor is mu(s) = c + h tanh(f(s)), c = (high + low) / 2, h = (high - low) / 2 (rlrun.networks.BoundedActor).
For a minibatch (s, a, r, s', terminated) drawn uniformly from the replay buffer, with target networks Q_i'
and mu' (no gradient flows through y), the noise in units of h:

    a'       = clip(mu'(s') + h clip(eps, -c, c), low, high),   eps ~ N(0, sigma^2),  sigma = target_noise,
                                                                 c = target_noise_clip
    y        = r + gamma (1 - terminated) min_i Q_i'(s', a')
    L_critic = mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2
    every policy_delay-th update:
    L_actor  = -mean Q_1(s, mu(s))
    theta'  <- theta' + tau (theta - theta')   (Polyak averaging of the actor's and both critics' targets,
                                                rlrun.returns.polyak_update)

s' is the true next observation: a time-limit truncation bootstraps from it, a termination from nothing.
Exploration as DDPG's: uniform random actions for the first `learning_starts` env steps, then mu(s) + h eps
clipped to the bounds, eps Gaussian or Ornstein-Uhlenbeck (rlrun.exploration.ActionNoise) of scale
`exploration_noise`; `gradient_steps` updates every `train_every` env steps (rlrun.off_policy).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import torch
from torch import nn

from rlrun.core import RunContext
from rlrun.networks import TwinCritic, gradient_step
from rlrun.off_policy import DeterministicActorCritic, Minibatch
from rlrun.returns import polyak_update
from rlrun.validation import NON_NEGATIVE, POSITIVE_INT


class TD3(DeterministicActorCritic):
    hyperparameter_rules = {**DeterministicActorCritic.shared_rules, "policy_delay": POSITIVE_INT,
                            "target_noise": NON_NEGATIVE, "target_noise_clip": NON_NEGATIVE}

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, context: RunContext,
                 gamma: float = 0.99, actor_lr: float = 1e-3, critic_lr: float = 1e-3, buffer_size: int = 1_000_000,
                 batch_size: int = 256, learning_starts: int = 10_000, train_every: int = 1, gradient_steps: int = 1,
                 tau: float = 0.005, noise_type: str = "gaussian", exploration_noise: float = 0.1,
                 ou_theta: float = 0.15, ou_dt: float = 0.01, policy_delay: int = 2, target_noise: float = 0.2,
                 target_noise_clip: float = 0.5, lr_schedule: str = "constant", compile: bool = False):
        super().__init__("td3", observation_space, action_space, context, gamma, actor_lr, critic_lr, buffer_size,
                         batch_size, learning_starts, train_every, gradient_steps, tau, noise_type, exploration_noise,
                         ou_theta, ou_dt, lr_schedule, compile)
        self.policy_delay = policy_delay
        self.target_noise = target_noise
        self.target_noise_clip = target_noise_clip

    def make_critic(self, make_net: Callable[..., nn.Module]) -> TwinCritic:
        return TwinCritic(make_net, self.obs_dim, self.action_dim)

    def td_target(self, reward: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - terminated) min_i Q_i'(s', a'), a' = clip(mu'(s') + h clip(eps, -c, c), low, high)."""
        with torch.no_grad():
            next_action = self.actor_target(next_obs)
            smoothing = (self.target_noise * torch.randn_like(next_action)).clamp(-self.target_noise_clip,
                                                                                  self.target_noise_clip)
            next_action = (next_action + self.actor.half_range * smoothing).clamp(self.low, self.high)
            return reward + self.gamma * (1.0 - terminated) * self.critic_target.min(next_obs, next_action)

    def actor_loss(self, obs: torch.Tensor) -> torch.Tensor:
        """-mean Q_1(s, mu(s)); the critics' parameters take no gradient from it (rlrun.off_policy freezes them)."""
        return -self.critic.q1(obs, self.actor(obs)).mean()

    def critic_loss(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
                    next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2, and the mean Q_1(s, a)."""
        y = self.td_target(reward, terminated, next_obs)
        q1, q2 = self.critic(obs, action)
        return nn.functional.mse_loss(q1, y) + nn.functional.mse_loss(q2, y), q1.detach().mean()

    def update(self, batch: Minibatch) -> dict[str, torch.Tensor]:
        critic_loss, q_mean = self.critic_loss(batch.obs, batch.action, batch.reward, batch.terminated, batch.next_obs)
        gradient_step(self.critic_optimizer, critic_loss)
        metrics = {"critic_loss": critic_loss.detach(), "q_values": q_mean}
        if self.updates % self.policy_delay == 0:  # delayed policy updates
            actor_loss = self.actor_loss(batch.obs)
            gradient_step(self.actor_optimizer, actor_loss)
            polyak_update(self.target_params, self.online_params, self.tau)
            metrics["actor_loss"] = actor_loss.detach()
        return metrics
