"""DQN: Q-learning with a neural network, a replay buffer and a target network, with the switches
Double DQN (`double`), a dueling head (`dueling`) and n-step returns (`n_step`).

Sources: Mnih et al. (2015) "Human-level control through deep reinforcement learning"; van Hasselt
et al. (2016) "Deep Reinforcement Learning with Double Q-learning"; Wang et al. (2016) "Dueling Network
Architectures for Deep Reinforcement Learning"; Sutton & Barto (2018) 7.1
(n-step returns); the seeds `002` (Q-learning as regression on a stop-gradient target, target
networks) and `003` (deep Q-learning with replay).

Each env's steps pass through a window of the last n steps. A step leaves the window, stored in the
replay buffer, once n steps follow it or its episode ends k <= n steps after it:

    R_t = sum_{i=0}^{k-1} gamma^i r_{t+i},   s' = s_{t+k},   discount = gamma^k      (rlrun.returns.n_step_return)

with k = n in the middle of an episode. At a termination every step still in the window is stored
with terminated = 1 (the tail is cut: nothing is bootstrapped past the end); at a time-limit
truncation with terminated = 0 and s' the true final observation, from which the target bootstraps.
For a minibatch drawn uniformly from the buffer, the Bellman target (no gradient flows through it) is

    y = R_t + gamma^k (1 - terminated) max_a' Q_target(s', a')                        (double=false)
    y = R_t + gamma^k (1 - terminated) Q_target(s', argmax_a' Q(s', a'))              (double=true)

and the loss is mean Huber(Q(s_t, a_t) - y) (loss=huber, delta 1) or mean (Q(s_t, a_t) - y)^2
(loss=mse), minimized with Adam or RMSProp, the gradient norm clipped to max_grad_norm. RMSProp is
Mnih et al.'s: centered (their gradient momentum 0.95 keeps the mean gradient it subtracts), squared-
gradient decay 0.95, and optimizer_eps their min squared gradient (0.01; torch adds it after the
square root, their code under it).

Schedule, in env steps summed over all envs: uniformly random actions before `learning_starts`,
then epsilon-greedy (rlrun.exploration) with epsilon following rlrun.schedules.Schedule (linear decay by default);
`gradient_steps` minibatch updates for each multiple of `train_every` env steps passed (two after a
vector step of 8 envs with train_every 4) once learning_starts have passed; every
`target_update_every` env steps the target moves to the online network,
theta_target <- tau theta + (1 - tau) theta_target (tau = 1: a hard copy). With dueling, the network is
Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (rlrun.networks.DuelingQNetwork). With
lr_schedule=linear the learning rate decays linearly to 0 over total_steps env steps.

Image observations (stacks of uint8 frames, as the 4x84x84 Atari input of Mnih et al.) go through the
network=cnn trunk, and the replay buffer stores each frame once (rlrun.buffers.FrameReplayBuffer).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.buffers import FrameReplayBuffer, ReplayBuffer
from rlrun.core import Agent, RunContext, Transition
from rlrun.exploration import epsilon_greedy
from rlrun.networks import OPTIMIZERS, ObservationEncoder, compile_if, gradient_step, is_image, make_optimizer
from rlrun.returns import intervals_passed, n_step_return, polyak_update, replay_ratio_warning
from rlrun.schedules import LR_SCHEDULES, LearningRateSchedule, schedule_from
from rlrun.validation import (BOOLEAN, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT_INTERVAL,
                              batch_fits_in_buffer, one_of, optional)

LOSSES = {"huber": nn.functional.smooth_l1_loss, "mse": nn.functional.mse_loss}
MNIH_RMSPROP = {"alpha": 0.95, "centered": True}


class DQN(Agent):
    observation_spaces = (gym.spaces.Box, gym.spaces.Discrete)
    action_spaces = (gym.spaces.Discrete,)
    hyperparameter_rules = {
        "gamma": UNIT_INTERVAL, "lr": POSITIVE, "optimizer": one_of(OPTIMIZERS), "optimizer_eps": POSITIVE,
        "buffer_size": POSITIVE_INT, "batch_size": POSITIVE_INT, "learning_starts": NON_NEGATIVE_INT,
        "train_every": POSITIVE_INT, "gradient_steps": POSITIVE_INT, "target_update_every": POSITIVE_INT,
        "tau": UNIT_INTERVAL, "epsilon.decay_steps": POSITIVE_INT, "double": BOOLEAN, "dueling": BOOLEAN,
        "n_step": POSITIVE_INT, "loss": one_of(LOSSES), "max_grad_norm": optional(POSITIVE),
        "lr_schedule": one_of(LR_SCHEDULES), "compile": BOOLEAN}
    config_checks = (batch_fits_in_buffer,)
    config_warnings = (replay_ratio_warning,)

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Discrete, context: RunContext,
                 gamma: float = 0.99, lr: float = 1e-4, buffer_size: int = 100_000, batch_size: int = 32,
                 learning_starts: int = 1000, train_every: int = 4, gradient_steps: int = 1,
                 target_update_every: int = 1000, tau: float = 1.0, epsilon: Mapping[str, Any] | None = None,
                 double: bool = False, dueling: bool = False, n_step: int = 1, loss: str = "huber",
                 max_grad_norm: float | None = 10.0, optimizer: str = "adam", optimizer_eps: float = 1e-8,
                 lr_schedule: str = "constant", compile: bool = False):
        self.lr_schedule = LearningRateSchedule(lr_schedule, context.total_steps)
        self.epsilon = schedule_from("algo.epsilon", epsilon or {"start": 0.05}, lambda v: 0 <= v <= 1, "in [0, 1]")
        self.device = context.device
        self.gamma = gamma
        self.batch_size = batch_size
        self.learning_starts = learning_starts
        self.train_every = train_every
        self.gradient_steps = gradient_steps
        self.target_update_every = target_update_every
        self.tau = tau
        self.double = double
        self.n_step = n_step
        self.loss = LOSSES[loss]
        self.max_grad_norm = max_grad_norm
        self.env_steps = 0

        self.encode = ObservationEncoder(observation_space, self.device)
        self.num_actions = int(action_space.n)
        self.q = context.make_net(self.encode.input_shape, self.num_actions, dueling=dueling).to(self.device)
        self.q_target = context.make_net(self.encode.input_shape, self.num_actions, dueling=dueling).to(self.device)
        self.q_target.requires_grad_(False).load_state_dict(self.q.state_dict())
        self.optimizer = make_optimizer(optimizer, self.q.parameters(), lr, optimizer_eps,
                                        **(MNIH_RMSPROP if optimizer == "rmsprop" else {}))

        obs_shape, obs_dtype = observation_space.shape, observation_space.dtype
        fields = {"action": ((), np.int64), "reward": ((), np.float32), "terminated": ((), np.float32),
                  "discount": ((), np.float32)}
        if is_image(observation_space) and not self.encode.channels_last:  # stacks of frames: each frame once
            self.replay_buffer: ReplayBuffer | FrameReplayBuffer = FrameReplayBuffer(buffer_size, obs_shape, obs_dtype,
                                                                                     fields)
        else:
            self.replay_buffer = ReplayBuffer(buffer_size, {"obs": (obs_shape, obs_dtype), "next_obs": (obs_shape, obs_dtype),
                                                     **fields})
        self.windows: list[deque] = []  # per env: (s, a, r) of the steps not yet in the buffer
        self.rng = np.random.default_rng(context.seed)  # draws the exploration and the minibatches
        self.td_loss = compile_if(compile, self.td_loss)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        with torch.inference_mode():
            q_values = self.q(self.encode(obs))
            if not explore:
                return q_values.argmax(-1).cpu().numpy()
        epsilon = 1.0 if self.env_steps < self.learning_starts else self.epsilon(self.env_steps)
        return epsilon_greedy(q_values.cpu().numpy(), epsilon, self.rng)

    def observe(self, t: Transition) -> dict[str, float]:
        before, self.env_steps = self.env_steps, self.env_steps + len(t.reward)
        self.store(t)
        metrics = {"charts/epsilon": self.epsilon(self.env_steps)}
        rounds = intervals_passed(before, self.env_steps, self.train_every)
        if self.env_steps > self.learning_starts and rounds:
            metrics.update(self.learn(rounds * self.gradient_steps))
        if intervals_passed(before, self.env_steps, self.target_update_every):
            polyak_update(self.q_target.parameters(), self.q.parameters(), self.tau)
        return metrics

    def store(self, t: Transition) -> None:
        """Move each env's step into its n-step window; store the steps whose n-step return is complete."""
        if not self.windows:
            self.windows = [deque() for _ in range(len(t.reward))]
        for i, window in enumerate(self.windows):
            window.append((t.obs[i], t.action[i], float(t.reward[i])))
            ended = t.terminated[i] or t.truncated[i]
            for _ in range(len(window) if ended else len(window) // self.n_step):
                obs, action, _ = window[0]
                discounted_return, discount = n_step_return((reward for _, _, reward in window), self.gamma)
                self.replay_buffer.add(obs=np.asarray(obs)[None], action=np.asarray(action)[None],
                                       reward=np.asarray([discounted_return]), next_obs=np.asarray(t.next_obs[i])[None],
                                       terminated=np.asarray([t.terminated[i]]), discount=np.asarray([discount]))
                window.popleft()

    def td_target(self, reward: torch.Tensor, discount: torch.Tensor, terminated: torch.Tensor,
                  next_obs: torch.Tensor) -> torch.Tensor:
        """y = R + gamma^k (1 - terminated) Q_target(s', a*), a* = argmax of Q_target (DQN) or of Q (Double DQN)."""
        with torch.no_grad():
            next_q_target = self.q_target(next_obs)
            if self.double:
                best_action = self.q(next_obs).argmax(-1, keepdim=True)
            else:
                best_action = next_q_target.argmax(-1, keepdim=True)
            next_value = next_q_target.gather(-1, best_action).squeeze(-1)
            return reward + discount * (1.0 - terminated) * next_value

    def td_loss(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
                terminated: torch.Tensor, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean Huber(Q(s, a) - y) (or the squared error), and the mean Q(s, a) of the minibatch."""
        target = self.td_target(reward, discount, terminated, next_obs)
        q = self.q(obs).gather(-1, action[:, None]).squeeze(-1)
        return self.loss(q, target), q.detach().mean()

    def learn(self, gradient_steps: int) -> dict[str, float]:
        if len(self.replay_buffer) < self.batch_size:
            return {}
        learning_rate = self.lr_schedule.apply(self.optimizer, self.env_steps)
        td_losses, q_values = [], []
        for _ in range(gradient_steps):
            batch = {key: torch.as_tensor(value, device=self.device)
                     for key, value in self.replay_buffer.sample(self.batch_size, self.rng).items()}
            loss, q_mean = self.td_loss(self.encode(batch["obs"]), batch["action"], batch["reward"], batch["discount"],
                                        batch["terminated"], self.encode(batch["next_obs"]))
            gradient_step(self.optimizer, loss, self.max_grad_norm)
            td_losses.append(loss.detach())
            q_values.append(q_mean)
        return {"td_loss": torch.stack(td_losses).mean().item(), "q_values": torch.stack(q_values).mean().item(),
                "charts/learning_rate": learning_rate}

    def state_dict(self) -> dict[str, Any]:
        # the n-step windows are left out: at a checkpoint (a sync point) every episode has just ended
        return {"q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "env_steps": self.env_steps,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps = state["env_steps"]
        self.rng.bit_generator.state = state["rng"]
