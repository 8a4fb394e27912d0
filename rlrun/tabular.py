"""What tabular Q-learning and SARSA share: the Q-table, epsilon-greedy behaviour, and the averaged TD step.

    Q[s, a] += alpha * (y - Q[s, a])

where the transitions of one vector step that share (s, a) average their TD errors y - Q[s, a]: a sum would
multiply alpha by the number of envs that met the same cell. Each algorithm computes its own target y.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.core import Agent, RunContext
from rlrun.exploration import epsilon_greedy
from rlrun.schedules import schedule_from
from rlrun.validation import UNIT_INTERVAL, Rule, is_number


class TabularAgent(Agent):
    """A Q-table over Discrete states and actions. Behaviour: epsilon-greedy in Q (ties broken at random);
    evaluation: greedy (argmax, first index among ties). epsilon and alpha follow rlrun.schedules.Schedule
    over env steps; `context.seed` seeds the exploration."""

    observation_spaces = (gym.spaces.Discrete,)
    action_spaces = (gym.spaces.Discrete,)
    hyperparameter_rules = {"gamma": UNIT_INTERVAL, "initial_q": Rule("a number", is_number)}

    def __init__(self, observation_space: gym.spaces.Discrete, action_space: gym.spaces.Discrete, context: RunContext,
                 gamma: float = 0.99, alpha: Mapping[str, Any] | None = None, epsilon: Mapping[str, Any] | None = None,
                 initial_q: float = 0.0):
        self.gamma = gamma
        self.alpha = schedule_from("algo.alpha", alpha or {"start": 0.1}, lambda v: 0 < v <= 1, "in (0, 1]")
        self.epsilon = schedule_from("algo.epsilon", epsilon or {"start": 0.1}, lambda v: 0 <= v <= 1, "in [0, 1]")
        self.q_table = np.full((int(observation_space.n), int(action_space.n)), float(initial_q))
        self.rng = np.random.default_rng(context.seed)
        self.env_steps = 0

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        if not explore:
            return self.q_table[obs].argmax(1)
        return epsilon_greedy(self.q_table[obs], self.epsilon(self.env_steps), self.rng)

    def td_step(self, s: np.ndarray, a: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Move Q[s, a] towards the targets y (one per env), count the env steps, and return the metrics."""
        td_error = target - self.q_table[s, a]
        alpha = self.alpha(self.env_steps)
        cells = s * self.q_table.shape[1] + a
        sharing = (cells[:, None] == cells).sum(1)
        np.add.at(self.q_table.reshape(-1), cells, alpha * td_error / sharing)
        self.env_steps += len(s)
        return {"td_error": float(np.abs(td_error).mean()), "charts/epsilon": self.epsilon(self.env_steps),
                "charts/alpha": alpha}

    def state_dict(self) -> dict[str, Any]:
        return {"q_table": torch.from_numpy(self.q_table.copy()), "env_steps": self.env_steps,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_table = state["q_table"].numpy().astype(np.float64)
        self.env_steps = state["env_steps"]
        self.rng.bit_generator.state = state["rng"]
