"""What the off-policy actor-critics for Box actions (DDPG, TD3, SAC) share; their targets and losses are in
their own files.

- A replay buffer of transitions (s, a, r, s', terminated), s' the true next observation: the target
  bootstraps from s' at a time-limit truncation and from nothing past a termination.
- Uniformly random actions over the bounds for the first `learning_starts` env steps, then the algorithm's
  policy (`policy_action`).
- Update rounds counted in env steps summed over all envs: `gradient_steps` updates (`update`, one minibatch
  drawn uniformly from the buffer each) for every multiple of `train_every` passed (rlrun.returns.intervals_passed),
  once `learning_starts` env steps have passed and the buffer holds a minibatch.
- With lr_schedule=linear, every optimizer's learning rate decays linearly to 0 over the run's total_steps (set
  before each update round, as Stable-Baselines3's schedules for these algorithms).
- The checkpointed state: the `state_dict` of each attribute named in `checkpointed`, the step counters and the
  minibatch generator.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.buffers import ReplayBuffer
from rlrun.core import Agent, RunContext, Transition
from rlrun.errors import ConfigError
from rlrun.exploration import NOISE_TYPES, ActionNoise
from rlrun.networks import BoundedActor, ObservationEncoder, compile_if, finite_bounds, frozen, target_copy
from rlrun.returns import intervals_passed, replay_ratio_warning
from rlrun.schedules import LR_SCHEDULES, LearningRateSchedule
from rlrun.validation import (BOOLEAN, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT_INTERVAL,
                              batch_fits_in_buffer, one_of)


@dataclass(frozen=True)
class Minibatch:
    obs: torch.Tensor          # encoded s
    action: torch.Tensor       # (batch, action_dim)
    reward: torch.Tensor
    next_obs: torch.Tensor     # encoded s'
    terminated: torch.Tensor   # 1.0 where s' ended the episode for good


class OffPolicyActorCritic(Agent):
    observation_spaces = (gym.spaces.Box, gym.spaces.Discrete)
    action_spaces = (gym.spaces.Box,)
    shared_rules: ClassVar = {
        "gamma": UNIT_INTERVAL, "buffer_size": POSITIVE_INT, "batch_size": POSITIVE_INT,
        "learning_starts": NON_NEGATIVE_INT, "train_every": POSITIVE_INT, "gradient_steps": POSITIVE_INT,
        "tau": UNIT_INTERVAL, "lr_schedule": one_of(LR_SCHEDULES), "compile": BOOLEAN}
    config_checks = (batch_fits_in_buffer,)
    config_warnings = (replay_ratio_warning,)
    checkpointed: ClassVar[tuple[str, ...]]  # attributes whose state_dict goes into the checkpoint

    def __init__(self, algo_name: str, observation_space: gym.Space, action_space: gym.spaces.Box,
                 context: RunContext, gamma: float, buffer_size: int, batch_size: int, learning_starts: int,
                 train_every: int, gradient_steps: int, tau: float, lr_schedule: str, compile: bool):
        low, high = finite_bounds(algo_name, action_space)
        self.device = context.device
        self.gamma = gamma
        self.batch_size = batch_size
        self.learning_starts = learning_starts
        self.train_every = train_every
        self.gradient_steps = gradient_steps
        self.tau = tau
        self.lr_schedule = LearningRateSchedule(lr_schedule, context.total_steps)
        self.env_steps = 0
        self.updates = 0  # gradient steps taken

        self.encode = ObservationEncoder(observation_space, self.device)
        if not isinstance(self.encode.input_shape, int):
            raise ConfigError(f"algo={algo_name} takes vector observations (its critic reads the observation and the "
                              "action side by side); for image observations use algo=ppo, algo=a2c or algo=reinforce")
        self.obs_dim, self.action_dim, self.action_shape = self.encode.input_shape, len(low), action_space.shape
        self.low, self.high = (torch.as_tensor(bound, dtype=torch.float32, device=self.device) for bound in (low, high))
        obs_shape, obs_dtype = observation_space.shape, observation_space.dtype
        self.replay_buffer = ReplayBuffer(buffer_size, {
            "obs": (obs_shape, obs_dtype), "action": ((self.action_dim,), np.float32), "reward": ((), np.float32),
            "next_obs": (obs_shape, obs_dtype), "terminated": ((), np.float32)})
        self.rng = np.random.default_rng(context.seed)  # draws the minibatches
        self.critic_loss = compile_if(compile, self.critic_loss)
        self.actor_loss = self.with_critic_frozen(compile_if(compile, self.actor_loss))

    @abstractmethod
    def policy_action(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """Actions (batch, action_dim) inside the bounds for encoded observations: exploring or deterministic."""

    @abstractmethod
    def critic_loss(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
                    next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic's loss on a minibatch and its mean Q(s, a) (run through torch.compile with compile=true)."""

    @abstractmethod
    def actor_loss(self, *args: torch.Tensor) -> Any:
        """The actor's loss (run through torch.compile with compile=true); called with the critic frozen."""

    def with_critic_frozen(self, actor_loss: Callable[..., Any]) -> Callable[..., Any]:
        """`actor_loss` with the critic's parameters frozen around it, outside what torch.compile traces (it cannot
        change a tensor's requires_grad)."""
        def frozen_critic_actor_loss(*args: torch.Tensor) -> Any:
            with frozen(self.critic):
                return actor_loss(*args)
        return frozen_critic_actor_loss

    @abstractmethod
    def update(self, batch: Minibatch) -> dict[str, torch.Tensor]:
        """One gradient step on a minibatch; returns its metrics as tensors (averaged over a round by observe)."""

    def episodes_ended(self, ended: np.ndarray) -> None:
        """Called with the envs whose episode ended at this step (per-episode exploration state)."""

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        with torch.inference_mode():
            if explore and self.env_steps < self.learning_starts:
                action = self.low + (self.high - self.low) * torch.rand(len(obs), self.action_dim, device=self.device)
            else:
                action = self.policy_action(self.encode(obs), explore)
        return action.cpu().numpy().reshape((len(obs), *self.action_shape))

    def observe(self, t: Transition) -> dict[str, float]:
        before, self.env_steps = self.env_steps, self.env_steps + len(t.reward)
        self.replay_buffer.add(obs=t.obs, action=t.action.reshape(len(t.reward), -1), reward=t.reward,
                               next_obs=t.next_obs, terminated=t.terminated)
        self.episodes_ended(t.terminated | t.truncated)
        rounds = intervals_passed(before, self.env_steps, self.train_every)
        if self.env_steps < self.learning_starts or rounds == 0 or len(self.replay_buffer) < self.batch_size:
            return {}
        learning_rates = [self.lr_schedule.apply(optimizer, self.env_steps) for optimizer in self.optimizers()]
        metrics: dict[str, list[torch.Tensor]] = {}
        for _ in range(rounds * self.gradient_steps):
            self.updates += 1
            for name, value in self.update(self.minibatch()).items():
                metrics.setdefault(name, []).append(value)
        return {**{name: torch.stack(values).mean().item() for name, values in metrics.items()},
                "charts/learning_rate": learning_rates[0]}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The checkpointed optimizers, the actor's first."""
        return [getattr(self, name) for name in self.checkpointed
                if isinstance(getattr(self, name), torch.optim.Optimizer)]

    def minibatch(self) -> Minibatch:
        rows = {key: torch.as_tensor(value, device=self.device)
                for key, value in self.replay_buffer.sample(self.batch_size, self.rng).items()}
        return Minibatch(self.encode(rows["obs"]), rows["action"], rows["reward"], self.encode(rows["next_obs"]),
                         rows["terminated"])

    def state_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name).state_dict() for name in self.checkpointed},
                "env_steps": self.env_steps, "updates": self.updates, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.checkpointed:
            getattr(self, name).load_state_dict(state[name])
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        self.rng.bit_generator.state = state["rng"]


class DeterministicActorCritic(OffPolicyActorCritic):
    """The networks of DDPG and TD3 and their exploration: the deterministic actor mu(s) = c + h tanh(f(s))
    (rlrun.networks.BoundedActor), the algorithm's critic (`make_critic`), a target network of each, and an Adam
    optimizer of each; actions mu(s) + h eps clipped to the bounds, with eps Gaussian or Ornstein-Uhlenbeck noise
    of scale `exploration_noise` (rlrun.exploration.ActionNoise, in units of h)."""

    shared_rules: ClassVar = {
        **OffPolicyActorCritic.shared_rules, "actor_lr": POSITIVE, "critic_lr": POSITIVE,
        "noise_type": one_of(NOISE_TYPES), "exploration_noise": NON_NEGATIVE, "ou_theta": NON_NEGATIVE,
        "ou_dt": NON_NEGATIVE}
    checkpointed = ("actor", "critic", "actor_target", "critic_target", "actor_optimizer", "critic_optimizer",
                    "noise")

    def __init__(self, algo_name: str, observation_space: gym.Space, action_space: gym.spaces.Box,
                 context: RunContext, gamma: float, actor_lr: float, critic_lr: float, buffer_size: int,
                 batch_size: int, learning_starts: int, train_every: int, gradient_steps: int, tau: float,
                 noise_type: str, exploration_noise: float, ou_theta: float, ou_dt: float, lr_schedule: str,
                 compile: bool):
        super().__init__(algo_name, observation_space, action_space, context, gamma, buffer_size, batch_size,
                         learning_starts, train_every, gradient_steps, tau, lr_schedule, compile)
        make_net = context.make_net
        self.actor = BoundedActor(make_net(self.obs_dim, self.action_dim), self.low, self.high).to(self.device)
        self.critic = self.make_critic(make_net).to(self.device)
        self.actor_target = target_copy(BoundedActor(make_net(self.obs_dim, self.action_dim), self.low, self.high),
                                        self.actor)
        self.critic_target = target_copy(self.make_critic(make_net), self.critic)
        self.online_params = [*self.actor.parameters(), *self.critic.parameters()]
        self.target_params = [*self.actor_target.parameters(), *self.critic_target.parameters()]
        # fused: one kernel per optimizer step instead of a dozen per parameter tensor
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, fused=True)
        self.noise = ActionNoise(noise_type, exploration_noise, ou_theta, ou_dt, self.device)

    @abstractmethod
    def make_critic(self, make_net: Callable[..., nn.Module]) -> nn.Module:
        """The critic, built from the network factory (called twice: the critic and its target)."""

    def policy_action(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """mu(s), plus h eps when exploring, clipped to the bounds."""
        action = self.actor(obs)
        if not explore:
            return action
        return (action + self.actor.half_range * self.noise.sample(tuple(action.shape))).clamp(self.low, self.high)

    def episodes_ended(self, ended: np.ndarray) -> None:
        self.noise.reset(ended)
