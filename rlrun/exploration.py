"""Exploration: epsilon-greedy action selection over rows of action values, the action noise of the
deterministic actors (DDPG, TD3), and the schedule of gSDE's noise matrices (SAC, PPO, A2C)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rlrun.returns import intervals_passed

NOISE_TYPES = ("gaussian", "ou")


def epsilon_greedy(q_values: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Per row: a uniformly random action with probability epsilon, else a greedy one (ties broken at random)."""
    rows, actions = q_values.shape
    is_best = q_values == q_values.max(1, keepdims=True)
    greedy = (rng.random((rows, actions)) * is_best).argmax(1)
    # floor(U * actions) is uniform over the actions, and cheaper than Generator.integers for a small batch
    random_actions = (rng.random(rows) * actions).astype(np.int64)
    return np.where(rng.random(rows) < epsilon, random_actions, greedy)


class ActionNoise:
    """eps added to a deterministic action, one row per env, drawn with torch's global generator:

        gaussian: eps ~ N(0, sigma^2)
        ou:       eps_{t+1} = eps_t - theta eps_t dt + sigma sqrt(dt) N(0, 1)   (Ornstein-Uhlenbeck, one process per
                  env, starting at 0 and reset to 0 where an episode ended, as in OpenAI Baselines and SB3)
    """

    def __init__(self, noise_type: str, sigma: float, theta: float, dt: float, device: torch.device):
        self.noise_type, self.sigma, self.theta, self.dt, self.device = noise_type, sigma, theta, dt, device
        self.state: torch.Tensor | None = None  # the OU processes

    def sample(self, shape: tuple[int, int]) -> torch.Tensor:
        if self.noise_type == "gaussian":
            return self.sigma * torch.randn(shape, device=self.device)
        if self.state is None:
            self.state = torch.zeros(shape, device=self.device)
        self.state = (1 - self.theta * self.dt) * self.state + self.sigma * self.dt ** 0.5 * torch.randn_like(self.state)
        return self.state

    def reset(self, ended: np.ndarray) -> None:
        """Zero the OU processes of the envs whose episode ended."""
        if self.state is not None:
            self.state = torch.where(torch.as_tensor(ended, device=self.device)[:, None], 0.0, self.state)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.state is None else {"ou_state": self.state.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "ou_state" in state:
            self.state = state["ou_state"].to(self.device)


class HeldNoise:
    """The noise matrix E of each env under gSDE (rlrun.networks.StateDependentNoise), drawn by `draw(num_envs)` at the
    first exploring action and held until it is due again: every `every` env steps (summed over the envs), or, with
    every=None, until the algorithm's rollout ends (Stable-Baselines3's sde_sample_freq=-1)."""

    def __init__(self, draw: Callable[[int], torch.Tensor], every: int | None, device: torch.device):
        self.draw, self.every, self.device = draw, every, device
        self.current: torch.Tensor | None = None

    def __call__(self, num_envs: int) -> torch.Tensor:
        if self.current is None or len(self.current) != num_envs:
            self.current = self.draw(num_envs)
        return self.current

    def advance(self, before: int, after: int) -> None:
        """The env steps went from `before` to `after`: a new E is drawn at the next action where one fell due."""
        if self.every is not None and intervals_passed(before, after, self.every):
            self.current = None

    def rollout_ended(self) -> None:
        if self.every is None:
            self.current = None

    def state_dict(self) -> dict[str, Any]:
        return {} if self.current is None else {"noise": self.current.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = state["noise"].to(self.device) if "noise" in state else None  # checkpoints load on the CPU
