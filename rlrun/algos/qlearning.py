"""Tabular Q-learning (Watkins 1989): off-policy TD control towards Q*.

Sources: the seeds `002` (Q-learning from data, stop-grad target, terminal base case) and `000`
(tabular Q-learning as SGD on the Bellman error); Sutton & Barto (2018), section 6.5.

For each transition (s, a, r, s') of every env, with learning rate alpha:

    y        = r + gamma * max_a' Q[s', a']      if the episode goes on or was cut by a time limit
    y        = r                                 if s' is terminal (terminated): no bootstrap
    Q[s, a] += alpha * (y - Q[s, a])

Transitions of one vector step that share (s, a) average their TD errors (y - Q[s, a]) in one update.

Behaviour policy: epsilon-greedy in Q (ties broken at random); the greedy policy (argmax, first
index among ties) is evaluated. epsilon and alpha follow rlrun.schedules.Schedule over env steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.core import Transition
from rlrun.exploration import epsilon_greedy
from rlrun.schedules import schedule_from


class QLearning:
    observation_spaces = (gym.spaces.Discrete,)
    action_spaces = (gym.spaces.Discrete,)

    def __init__(self, observation_space: gym.spaces.Discrete, action_space: gym.spaces.Discrete,
                 gamma: float = 0.99, alpha: Mapping[str, Any] | None = None, epsilon: Mapping[str, Any] | None = None,
                 initial_q: float = 0.0, seed: int = 0):
        self.gamma = gamma
        self.alpha = schedule_from("algo.alpha", alpha or {"start": 0.1}, lambda v: 0 < v <= 1, "in (0, 1]")
        self.epsilon = schedule_from("algo.epsilon", epsilon or {"start": 0.1}, lambda v: 0 <= v <= 1, "in [0, 1]")
        self.q_table = np.full((int(observation_space.n), int(action_space.n)), float(initial_q))
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        q = self.q_table[obs]
        if not explore:
            return q.argmax(1)
        return epsilon_greedy(q, self.epsilon(self.env_steps), self.rng)

    def observe(self, t: Transition) -> dict[str, float]:
        s, a, r, s_next = t.obs, t.action, t.reward, t.next_obs
        target = r + self.gamma * (1.0 - t.terminated) * self.q_table[s_next].max(1)
        td_error = target - self.q_table[s, a]
        alpha = self.alpha(self.env_steps)
        # envs that update the same (s, a) in this step average their TD errors: a sum would multiply alpha
        cells = s * self.q_table.shape[1] + a
        sharing = (cells[:, None] == cells).sum(1)
        np.add.at(self.q_table.reshape(-1), cells, alpha * td_error / sharing)
        self.env_steps += len(r)
        return {"td_error": float(np.abs(td_error).mean()), "charts/epsilon": self.epsilon(self.env_steps),
                "charts/alpha": alpha}

    def state_dict(self) -> dict[str, Any]:
        return {"q_table": torch.from_numpy(self.q_table.copy()), "env_steps": self.env_steps,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_table = state["q_table"].numpy().astype(np.float64)
        self.env_steps = state["env_steps"]
        self.rng.bit_generator.state = state["rng"]
