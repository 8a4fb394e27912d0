"""DQN: Q-learning with a neural network, a replay buffer and a target network, with the switches
Double DQN (`double`), a dueling head (`network.dueling`) and n-step returns (`n_step`).

Sources: Mnih et al. (2015) "Human-level control through deep reinforcement learning"; van Hasselt
et al. (2016) "Deep Reinforcement Learning with Double Q-learning"; Sutton & Barto (2018) 7.1
(n-step returns); the seeds `002` (Q-learning as regression on a stop-gradient target, target
networks) and `003` (deep Q-learning with replay).

Each env's steps pass through a window of the last n steps. A step leaves the window, stored in the
replay buffer, once n steps follow it or its episode ends k <= n steps after it:

    R_t = sum_{i=0}^{k-1} gamma^i r_{t+i},   s' = s_{t+k},   discount = gamma^k

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
then epsilon-greedy with epsilon following rlrun.schedules.Schedule (linear decay by default);
`gradient_steps` minibatch updates for each multiple of `train_every` env steps passed (two after a
vector step of 8 envs with train_every 4) once learning_starts have passed; every
`target_update_every` env steps the target moves to the online network,
theta_target <- tau theta + (1 - tau) theta_target (tau = 1: a hard copy). With
lr_schedule=linear the learning rate decays linearly to 0 over total_steps env steps.

Image observations (stacks of uint8 frames, as the 4x84x84 Atari input of Mnih et al.) go through the
network=cnn trunk, and the replay buffer stores each frame once (rlrun.buffers.FrameReplayBuffer).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.buffers import FrameReplayBuffer, ReplayBuffer
from rlrun.core import ConfigError, Transition
from rlrun.networks import ObservationEncoder, is_image, resolve_device
from rlrun.schedules import LearningRateSchedule, schedule_from

LOSSES = {"huber": nn.functional.smooth_l1_loss, "mse": nn.functional.mse_loss}
OPTIMIZERS = {  # fused / foreach: one kernel per step instead of one per parameter tensor, faster on CPU too
    "adam": lambda params, lr, eps: torch.optim.Adam(params, lr, eps=eps, fused=True),
    "rmsprop": lambda params, lr, eps: torch.optim.RMSprop(params, lr, alpha=0.95, eps=eps, centered=True, foreach=True),
}


def n_step_transition(window: deque, next_obs: np.ndarray, terminated: bool, gamma: float) -> dict[str, Any]:
    """The window's oldest step (s_t, a_t) with R_t = sum_i gamma^i r_{t+i} over the k steps in the window,
    s' = s_{t+k} (`next_obs`) and discount gamma^k."""
    obs, action, _ = window[0]
    discounted_return = sum(gamma ** i * reward for i, (_, _, reward) in enumerate(window))
    return {"obs": obs, "action": action, "reward": discounted_return, "next_obs": next_obs,
            "terminated": terminated, "discount": gamma ** len(window)}


class DQN:
    observation_spaces = (gym.spaces.Box, gym.spaces.Discrete)
    action_spaces = (gym.spaces.Discrete,)

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Discrete,
                 make_net: Callable[[int, int], nn.Module], device: str = "cpu",
                 gamma: float = 0.99, lr: float = 1e-4, buffer_size: int = 100_000, batch_size: int = 32,
                 learning_starts: int = 1000, train_every: int = 4, gradient_steps: int = 1,
                 target_update_every: int = 1000, tau: float = 1.0, epsilon: Mapping[str, Any] | None = None,
                 double: bool = False, n_step: int = 1, loss: str = "huber", max_grad_norm: float | None = 10.0,
                 optimizer: str = "adam", optimizer_eps: float = 1e-8,
                 lr_schedule: str = "constant", total_steps: int | None = None, seed: int = 0):
        if loss not in LOSSES:
            raise ConfigError(f"algo.loss={loss!r} is unknown; use one of {', '.join(LOSSES)}")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"algo.optimizer={optimizer!r} is unknown; use one of {', '.join(OPTIMIZERS)}")
        for key, value, least in (("n_step", n_step, 1), ("buffer_size", buffer_size, 1),
                                  ("learning_starts", learning_starts, 0)):
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"algo.{key}={value!r} is invalid: it must be an integer >= {least}")
        self.lr_schedule = LearningRateSchedule(lr_schedule, total_steps)
        self.epsilon = schedule_from("algo.epsilon", epsilon or {"start": 0.05}, lambda v: 0 <= v <= 1, "in [0, 1]")
        self.device = resolve_device(device)
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
        self.q = make_net(self.encode.input_shape, self.num_actions).to(self.device)
        self.q_target = make_net(self.encode.input_shape, self.num_actions).to(self.device).requires_grad_(False)
        self.q_target.load_state_dict(self.q.state_dict())
        self.optimizer = OPTIMIZERS[optimizer](self.q.parameters(), lr=lr, eps=optimizer_eps)

        obs_shape, obs_dtype = observation_space.shape, observation_space.dtype
        fields = {"action": ((), np.int64), "reward": ((), np.float32), "terminated": ((), np.float32),
                  "discount": ((), np.float32)}
        if is_image(observation_space) and not self.encode.channels_last:  # stacks of frames: each frame once
            self.buffer: ReplayBuffer | FrameReplayBuffer = FrameReplayBuffer(buffer_size, obs_shape, obs_dtype, fields)
        else:
            self.buffer = ReplayBuffer(buffer_size, {"obs": (obs_shape, obs_dtype), "next_obs": (obs_shape, obs_dtype),
                                                     **fields})
        self.windows: list[deque] = []  # per env: (s, a, r) of the steps not yet in the buffer
        self.rng = np.random.default_rng(seed)  # draws the minibatches

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        with torch.inference_mode():
            action = self.q(self.encode(obs)).argmax(-1)
            if explore:
                epsilon = 1.0 if self.env_steps < self.learning_starts else self.epsilon(self.env_steps)
                random_action = torch.randint_like(action, self.num_actions)
                action = torch.where(torch.rand(action.shape, device=self.device) < epsilon, random_action, action)
        return action.cpu().numpy()

    def observe(self, t: Transition) -> dict[str, float]:
        before, self.env_steps = self.env_steps, self.env_steps + len(t.reward)
        self.store(t)
        metrics = {"charts/epsilon": self.epsilon(self.env_steps)}
        rounds = self.env_steps // self.train_every - before // self.train_every
        if self.env_steps > self.learning_starts and rounds:
            metrics.update(self.learn(rounds * self.gradient_steps))
        if self.crossed(before, self.target_update_every):
            self.update_target()
        return metrics

    def crossed(self, before: int, every: int) -> bool:
        """Whether a multiple of `every` env steps was passed in the last vector step."""
        return self.env_steps // every > before // every

    def store(self, t: Transition) -> None:
        """Move each env's step into its n-step window; store the steps whose n-step return is complete."""
        if not self.windows:
            self.windows = [deque() for _ in range(len(t.reward))]
        for i, window in enumerate(self.windows):
            window.append((t.obs[i], t.action[i], float(t.reward[i])))
            ended = t.terminated[i] or t.truncated[i]
            for _ in range(len(window) if ended else len(window) // self.n_step):
                self.buffer.add(**{key: np.asarray(value)[None] for key, value in
                                   n_step_transition(window, t.next_obs[i], bool(t.terminated[i]), self.gamma).items()})
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

    def learn(self, gradient_steps: int) -> dict[str, float]:
        if len(self.buffer) < self.batch_size:
            return {}
        self.lr_schedule.apply(self.optimizer, self.env_steps)
        td_losses, q_values = [], []
        for _ in range(gradient_steps):
            batch = {key: torch.as_tensor(value, device=self.device)
                     for key, value in self.buffer.sample(self.batch_size, self.rng).items()}
            target = self.td_target(batch["reward"], batch["discount"], batch["terminated"],
                                    self.encode(batch["next_obs"]))
            q = self.q(self.encode(batch["obs"])).gather(-1, batch["action"][:, None]).squeeze(-1)
            loss = self.loss(q, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.q.parameters(), self.max_grad_norm)
            self.optimizer.step()
            td_losses.append(loss.detach())
            q_values.append(q.detach().mean())
        return {"td_loss": torch.stack(td_losses).mean().item(), "q_values": torch.stack(q_values).mean().item()}

    def update_target(self) -> None:
        """theta_target <- tau theta + (1 - tau) theta_target."""
        with torch.no_grad():
            for target, online in zip(self.q_target.parameters(), self.q.parameters()):
                target.mul_(1.0 - self.tau).add_(online, alpha=self.tau)

    def state_dict(self) -> dict[str, Any]:
        # the n-step windows are left out: at a checkpoint (a sync point) every episode has just ended
        return {"q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "env_steps": self.env_steps,
                "rng": self.rng.bit_generator.state, "replay_buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps = state["env_steps"]
        self.rng.bit_generator.state = state["rng"]
        if "replay_buffer" in state:  # a checkpoint written with checkpoint.save_replay=false has none
            self.buffer.load_state_dict(state["replay_buffer"])
