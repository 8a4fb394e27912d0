"""DDPG: deep deterministic policy gradient, an off-policy actor-critic for continuous (Box) actions.

Sources: Lillicrap et al. (2016) "Continuous control with deep reinforcement learning"; Silver et
al. (2014) "Deterministic Policy Gradient Algorithms"; the seed `004` (deterministic policy
gradient, target actor and critic; its snippet feeds an action into the target actor, which is
wrong: the target actor sees s' only).

The actor is mu(s) = c + h tanh(f(s)), with c = (high + low) / 2 and h = (high - low) / 2, so its
actions always lie in the action bounds (rlrun.networks.BoundedActor); the critic is Q(s, a). For a
minibatch (s, a, r, s', terminated) drawn uniformly from the replay buffer, with target networks Q'
and mu' (no gradient flows through y):

    y        = r + gamma (1 - terminated) Q'(s', mu'(s'))
    L_critic = mean (Q(s, a) - y)^2
    L_actor  = -mean Q(s, mu(s))              (the deterministic policy gradient: grad_a Q(s, a) grad_theta mu(s))
    theta'  <- theta' + tau (theta - theta')  (Polyak averaging of both target networks after each update,
                                               rlrun.returns.polyak_update)

s' is the true next observation: a time-limit truncation bootstraps from Q'(s', mu'(s')), a
termination from nothing. The actor step uses the critic as updated by this step's critic step.

Exploration, in units of the half range h of each action dimension: uniform random actions over the
bounds for the first `learning_starts` env steps, then mu(s) + h eps, clipped to the bounds, with eps
Gaussian or Ornstein-Uhlenbeck noise of scale sigma = exploration_noise (rlrun.exploration.ActionNoise).
`gradient_steps` updates every `train_every` env steps (summed over all envs) once learning_starts have
passed (rlrun.off_policy). TD3 (algo=td3) adds twin critics, delayed actor updates and target smoothing.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import torch
from torch import nn

from rlrun.core import RunContext
from rlrun.networks import Critic, gradient_step
from rlrun.off_policy import DeterministicActorCritic, Minibatch
from rlrun.returns import polyak_update


class DDPG(DeterministicActorCritic):
    hyperparameter_rules = DeterministicActorCritic.shared_rules

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, context: RunContext,
                 gamma: float = 0.99, actor_lr: float = 1e-3, critic_lr: float = 1e-3, buffer_size: int = 1_000_000,
                 batch_size: int = 256, learning_starts: int = 10_000, train_every: int = 1, gradient_steps: int = 1,
                 tau: float = 0.005, noise_type: str = "gaussian", exploration_noise: float = 0.1,
                 ou_theta: float = 0.15, ou_dt: float = 0.01, lr_schedule: str = "constant", compile: bool = False):
        super().__init__("ddpg", observation_space, action_space, context, gamma, actor_lr, critic_lr, buffer_size,
                         batch_size, learning_starts, train_every, gradient_steps, tau, noise_type, exploration_noise,
                         ou_theta, ou_dt, lr_schedule, compile)

    def make_critic(self, make_net: Callable[..., nn.Module]) -> Critic:
        return Critic(make_net(self.obs_dim + self.action_dim, 1))

    def td_target(self, reward: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - terminated) Q'(s', mu'(s'))."""
        with torch.no_grad():
            return reward + self.gamma * (1.0 - terminated) * self.critic_target(next_obs, self.actor_target(next_obs))

    def actor_loss(self, obs: torch.Tensor) -> torch.Tensor:
        """-mean Q(s, mu(s)); the critic's parameters take no gradient from it (rlrun.off_policy freezes them)."""
        return -self.critic(obs, self.actor(obs)).mean()

    def critic_loss(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
                    next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean (Q(s, a) - y)^2, and the mean Q(s, a)."""
        y = self.td_target(reward, terminated, next_obs)
        q = self.critic(obs, action)
        return nn.functional.mse_loss(q, y), q.detach().mean()

    def update(self, batch: Minibatch) -> dict[str, torch.Tensor]:
        critic_loss, q_mean = self.critic_loss(batch.obs, batch.action, batch.reward, batch.terminated, batch.next_obs)
        gradient_step(self.critic_optimizer, critic_loss)
        actor_loss = self.actor_loss(batch.obs)
        gradient_step(self.actor_optimizer, actor_loss)
        polyak_update(self.target_params, self.online_params, self.tau)
        return {"critic_loss": critic_loss.detach(), "q_values": q_mean, "actor_loss": actor_loss.detach()}
