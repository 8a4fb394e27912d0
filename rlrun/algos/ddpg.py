"""DDPG: deep deterministic policy gradient, an off-policy actor-critic for continuous (Box) actions.

Sources: Lillicrap et al. (2016) "Continuous control with deep reinforcement learning"; Silver et
al. (2014) "Deterministic Policy Gradient Algorithms"; the seed `004` (deterministic policy
gradient, target actor and critic; its snippet feeds an action into the target actor, which is
wrong: the target actor sees s' only). Optional TD3 tricks (Fujimoto et al. 2018), off by default.

The actor is mu(s) = c + h tanh(f(s)), with c = (high + low) / 2 and h = (high - low) / 2, so its
actions always lie in the action bounds; the critic is Q(s, a). For a minibatch (s, a, r, s', terminated)
drawn uniformly from the replay buffer, with target networks Q' and mu' (no gradient flows through y):

    y        = r + gamma (1 - terminated) Q'(s', mu'(s'))
    L_critic = mean (Q(s, a) - y)^2
    L_actor  = -mean Q(s, mu(s))              (the deterministic policy gradient: grad_a Q(s, a) grad_theta mu(s))
    theta'  <- theta' + tau (theta - theta')  (Polyak averaging of both target networks after each actor step,
                                               rlrun.returns.polyak_update)

s' is the true next observation: a time-limit truncation bootstraps from Q'(s', mu'(s')), a
termination from nothing. The actor step uses the critic as updated by this step's critic step.

Exploration, in units of the half range h of each action dimension: uniform random actions over the
bounds for the first `learning_starts` env steps, then mu(s) + h eps, clipped to the bounds, with

    gaussian: eps ~ N(0, sigma^2)
    ou:       eps_{t+1} = eps_t - theta eps_t dt + sigma sqrt(dt) N(0, 1)   (Ornstein-Uhlenbeck, one process per
              env, reset to 0 where an episode ended; theta = ou_theta, dt = ou_dt, as in OpenAI Baselines and SB3)

and sigma = exploration_noise. `gradient_steps` updates every `train_every` env steps (summed over
all envs) once learning_starts have passed. TD3's options: with policy_delay = d the actor and the
targets are updated after every d-th critic step; with target_noise > 0 the target action is
clip(mu'(s') + clip(h N(0, target_noise^2), -h target_noise_clip, h target_noise_clip), low, high).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.buffers import ReplayBuffer
from rlrun.core import Agent, RunContext, Transition
from rlrun.errors import ConfigError
from rlrun.networks import ObservationEncoder
from rlrun.returns import intervals_passed, polyak_update, replay_ratio_warning
from rlrun.validation import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT_INTERVAL, one_of

NOISE_TYPES = ("gaussian", "ou")


class Actor(nn.Module):
    """mu(s) = center + half_range * tanh(net(s)): deterministic actions inside the Box bounds."""

    def __init__(self, net: nn.Module, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.net = net
        self.register_buffer("center", torch.as_tensor((high + low) / 2, dtype=torch.float32))
        self.register_buffer("half_range", torch.as_tensor((high - low) / 2, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * torch.tanh(self.net(obs))


class Critic(nn.Module):
    """Q(s, a) = net([s, a]), one value per row."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat((obs, action), -1)).squeeze(-1)


class OrnsteinUhlenbeckNoise:
    """eps <- eps - theta eps dt + sigma sqrt(dt) N(0, 1), one process per row (env), starting at 0;
    `reset` zeroes the rows whose episode ended."""

    def __init__(self, sigma: float, theta: float, dt: float, device: torch.device):
        self.sigma, self.theta, self.dt, self.device = sigma, theta, dt, device
        self.state: torch.Tensor | None = None

    def sample(self, shape: tuple[int, int]) -> torch.Tensor:
        if self.state is None:
            self.state = torch.zeros(shape, device=self.device)
        self.state = (1 - self.theta * self.dt) * self.state + self.sigma * self.dt ** 0.5 * torch.randn_like(self.state)
        return self.state

    def reset(self, ended: np.ndarray) -> None:
        if self.state is not None:
            self.state = torch.where(torch.as_tensor(ended, device=self.device)[:, None], 0.0, self.state)


class DDPG(Agent):
    observation_spaces = (gym.spaces.Box, gym.spaces.Discrete)
    action_spaces = (gym.spaces.Box,)
    hyperparameter_rules = {
        "gamma": UNIT_INTERVAL, "actor_lr": POSITIVE, "critic_lr": POSITIVE, "buffer_size": POSITIVE_INT,
        "batch_size": POSITIVE_INT, "learning_starts": NON_NEGATIVE_INT, "train_every": POSITIVE_INT,
        "gradient_steps": POSITIVE_INT, "tau": UNIT_INTERVAL, "noise_type": one_of(NOISE_TYPES),
        "exploration_noise": NON_NEGATIVE, "ou_theta": NON_NEGATIVE, "ou_dt": NON_NEGATIVE,
        "policy_delay": POSITIVE_INT, "target_noise": NON_NEGATIVE, "target_noise_clip": NON_NEGATIVE}
    config_warnings = (replay_ratio_warning,)

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, context: RunContext,
                 gamma: float = 0.99, actor_lr: float = 1e-3, critic_lr: float = 1e-3, buffer_size: int = 1_000_000,
                 batch_size: int = 256, learning_starts: int = 10_000, train_every: int = 1, gradient_steps: int = 1,
                 tau: float = 0.005, noise_type: str = "gaussian", exploration_noise: float = 0.1,
                 ou_theta: float = 0.15, ou_dt: float = 0.01, policy_delay: int = 1, target_noise: float = 0.0,
                 target_noise_clip: float = 0.5):
        low, high = action_space.low.astype(np.float64).ravel(), action_space.high.astype(np.float64).ravel()
        unbounded = np.flatnonzero(~(np.isfinite(low) & np.isfinite(high)))
        if len(unbounded):
            raise ConfigError(f"DDPG needs finite action bounds to scale its tanh actor, but action dimensions "
                              f"{unbounded.tolist()} are unbounded; wrap the env in gymnasium.wrappers.RescaleAction")
        self.device = context.device
        self.gamma = gamma
        self.batch_size = batch_size
        self.learning_starts = learning_starts
        self.train_every = train_every
        self.gradient_steps = gradient_steps
        self.tau = tau
        self.exploration_noise = exploration_noise
        self.policy_delay = policy_delay
        self.target_noise = target_noise
        self.target_noise_clip = target_noise_clip
        self.env_steps = 0
        self.critic_updates = 0

        self.encode = ObservationEncoder(observation_space, self.device)
        obs_dim = self.encode.input_shape
        if not isinstance(obs_dim, int):
            raise ConfigError("algo=ddpg takes vector observations (its critic reads the observation and the action "
                              "side by side); for image observations use algo=a2c or algo=reinforce")
        self.action_shape = action_space.shape
        action_dim = len(low)
        make_net = context.make_net
        self.actor = Actor(make_net(obs_dim, action_dim), low, high).to(self.device)
        self.critic = Critic(make_net(obs_dim + action_dim, 1)).to(self.device)
        self.actor_target = Actor(make_net(obs_dim, action_dim), low, high).to(self.device).requires_grad_(False)
        self.critic_target = Critic(make_net(obs_dim + action_dim, 1)).to(self.device).requires_grad_(False)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.online_params = [*self.actor.parameters(), *self.critic.parameters()]
        self.target_params = [*self.actor_target.parameters(), *self.critic_target.parameters()]
        # fused: one kernel per optimizer step instead of a dozen per parameter tensor
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, fused=True)
        self.low, self.high = self.actor.center - self.actor.half_range, self.actor.center + self.actor.half_range
        self.ou_noise = OrnsteinUhlenbeckNoise(exploration_noise, ou_theta, ou_dt, self.device) \
            if noise_type == "ou" else None

        obs_shape, obs_dtype = observation_space.shape, observation_space.dtype
        self.replay_buffer = ReplayBuffer(buffer_size, {
            "obs": (obs_shape, obs_dtype), "action": ((action_dim,), np.float32), "reward": ((), np.float32),
            "next_obs": (obs_shape, obs_dtype), "terminated": ((), np.float32)})
        self.rng = np.random.default_rng(context.seed)  # draws the minibatches

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        with torch.inference_mode():
            if explore and self.env_steps < self.learning_starts:
                action = self.low + (self.high - self.low) * torch.rand(len(obs), len(self.low), device=self.device)
            else:
                action = self.actor(self.encode(obs))
                if explore:
                    action = (action + self.actor.half_range * self.noise(len(obs))).clamp(self.low, self.high)
        return action.cpu().numpy().reshape((len(obs), *self.action_shape))

    def noise(self, rows: int) -> torch.Tensor:
        """eps of the exploration noise, in units of the half range."""
        if self.ou_noise is None:
            return self.exploration_noise * torch.randn(rows, len(self.low), device=self.device)
        return self.ou_noise.sample((rows, len(self.low)))

    def observe(self, t: Transition) -> dict[str, float]:
        before, self.env_steps = self.env_steps, self.env_steps + len(t.reward)
        self.replay_buffer.add(obs=t.obs, action=t.action.reshape(len(t.reward), -1), reward=t.reward,
                        next_obs=t.next_obs, terminated=t.terminated)
        if self.ou_noise is not None:
            self.ou_noise.reset(t.terminated | t.truncated)
        rounds = intervals_passed(before, self.env_steps, self.train_every)
        if self.env_steps < self.learning_starts or rounds == 0 or len(self.replay_buffer) < self.batch_size:
            return {}
        return self.learn(rounds * self.gradient_steps)

    def td_target(self, reward: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - terminated) Q'(s', mu'(s')), with TD3's target policy smoothing when target_noise > 0."""
        with torch.no_grad():
            next_action = self.actor_target(next_obs)
            if self.target_noise > 0:
                half_range = self.actor.half_range
                smoothing = (self.target_noise * torch.randn_like(next_action)).clamp(
                    -self.target_noise_clip, self.target_noise_clip)
                next_action = (next_action + half_range * smoothing).clamp(self.low, self.high)
            return reward + self.gamma * (1.0 - terminated) * self.critic_target(next_obs, next_action)

    def actor_loss(self, obs: torch.Tensor) -> torch.Tensor:
        """-mean Q(s, mu(s)); the critic's parameters take no gradient from it."""
        self.critic.requires_grad_(False)
        loss = -self.critic(obs, self.actor(obs)).mean()
        self.critic.requires_grad_(True)
        return loss

    def learn(self, steps: int) -> dict[str, float]:
        critic_losses, actor_losses, q_values = [], [], []
        for _ in range(steps):
            batch = {key: torch.as_tensor(value, device=self.device)
                     for key, value in self.replay_buffer.sample(self.batch_size, self.rng).items()}
            obs = self.encode(batch["obs"])
            y = self.td_target(batch["reward"], batch["terminated"], self.encode(batch["next_obs"]))
            q = self.critic(obs, batch["action"])
            critic_loss = nn.functional.mse_loss(q, y)
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimizer.step()
            critic_losses.append(critic_loss.detach())
            q_values.append(q.detach().mean())
            self.critic_updates += 1
            if self.critic_updates % self.policy_delay == 0:
                actor_loss = self.actor_loss(obs)
                self.actor_optimizer.zero_grad(set_to_none=True)
                actor_loss.backward()
                self.actor_optimizer.step()
                actor_losses.append(actor_loss.detach())
                polyak_update(self.target_params, self.online_params, self.tau)
        metrics = {"critic_loss": critic_losses, "q_values": q_values, "actor_loss": actor_losses}
        return {name: torch.stack(values).mean().item() for name, values in metrics.items() if values}

    def state_dict(self) -> dict[str, Any]:
        state = {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                 "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
                 "actor_optimizer": self.actor_optimizer.state_dict(),
                 "critic_optimizer": self.critic_optimizer.state_dict(),
                 "env_steps": self.env_steps, "critic_updates": self.critic_updates,
                 "rng": self.rng.bit_generator.state}
        if self.ou_noise is not None and self.ou_noise.state is not None:
            state["ou_state"] = self.ou_noise.state.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_optimizer", "critic_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        self.env_steps, self.critic_updates = state["env_steps"], state["critic_updates"]
        self.rng.bit_generator.state = state["rng"]
        if self.ou_noise is not None and "ou_state" in state:
            self.ou_noise.state = state["ou_state"].to(self.device)
