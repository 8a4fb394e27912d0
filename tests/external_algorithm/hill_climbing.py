"""Hill climbing on a linear policy: an algorithm from outside rlrun, with no discount and no replay buffer.

The policy is argmax_a (s W)_a. Each finished episode scores the weights it ran with; weights that score above
the best so far become the best, and the next candidate is the best plus Gaussian noise of scale `noise`.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.core import Agent, RunContext, Transition
from rlrun.validation import POSITIVE


class HillClimbing(Agent):
    observation_spaces = (gym.spaces.Box,)
    action_spaces = (gym.spaces.Discrete,)
    hyperparameter_rules = {"noise": POSITIVE}

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Discrete, context: RunContext,
                 noise: float = 0.5):
        self.noise = noise
        self.rng = np.random.default_rng(context.seed)
        self.best = np.zeros((observation_space.shape[0], int(action_space.n)))
        self.best_score = -np.inf
        self.candidate = self.best + noise * self.rng.standard_normal(self.best.shape)
        self.episode_returns: np.ndarray | None = None

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        return (obs @ (self.candidate if explore else self.best)).argmax(1)

    def observe(self, t: Transition) -> dict[str, float]:
        if self.episode_returns is None:
            self.episode_returns = np.zeros(len(t.reward))
        self.episode_returns += t.reward
        for i in np.flatnonzero(t.terminated | t.truncated):
            if self.episode_returns[i] > self.best_score:
                self.best, self.best_score = self.candidate, float(self.episode_returns[i])
            self.candidate = self.best + self.noise * self.rng.standard_normal(self.best.shape)
            self.episode_returns[i] = 0.0
        return {"best_score": self.best_score} if np.isfinite(self.best_score) else {}

    def state_dict(self) -> dict[str, Any]:
        return {"best": torch.from_numpy(self.best.copy()), "candidate": torch.from_numpy(self.candidate.copy()),
                "best_score": self.best_score, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.candidate = state["best"].numpy(), state["candidate"].numpy()
        self.best_score = state["best_score"]
        self.rng.bit_generator.state = state["rng"]
        self.episode_returns = None
