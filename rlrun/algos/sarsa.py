"""Tabular SARSA (Rummery & Niranjan 1994): on-policy TD control towards Q of the epsilon-greedy policy.

Sources: the seed `002` (SARSA uses the actual next action instead of the max; stop-grad target;
terminal base case); Sutton & Barto (2018), section 6.4.

For each transition (s, a, r, s') of every env, a' is chosen epsilon-greedily in s' before the update
and is then the action the agent actually takes in s':

    y        = r + gamma * Q[s', a']      if the episode goes on
    y        = r + gamma * Q[s', a']      if a time limit cut it: a' is drawn from the policy in s'
                                          (the action it would have taken) but never executed, since
                                          the env has been reset
    y        = r                          if s' is terminal (terminated): no bootstrap
    Q[s, a] += alpha * (y - Q[s, a])

Transitions of one vector step that share (s, a) average their TD errors (y - Q[s, a]) in one update.

Across an autoreset the next action is chosen afresh in the new episode's first state; it never
serves as a' for the previous episode's last transition. The greedy policy (argmax, first index
among ties) is evaluated. epsilon and alpha follow rlrun.schedules.Schedule over env steps.
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

NO_ACTION = -1


class Sarsa:
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
        self.next_actions: np.ndarray | None = None  # a' per env, chosen in observe, taken by the next act

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        if not explore:
            return self.q_table[obs].argmax(1)
        actions = epsilon_greedy(self.q_table[obs], self.epsilon(self.env_steps), self.rng)
        if self.next_actions is not None:
            actions = np.where(self.next_actions != NO_ACTION, self.next_actions, actions)
            self.next_actions = None
        return actions

    def observe(self, t: Transition) -> dict[str, float]:
        s, a, r, s_next = t.obs, t.action, t.reward, t.next_obs
        a_next = epsilon_greedy(self.q_table[s_next], self.epsilon(self.env_steps), self.rng)
        target = r + self.gamma * (1.0 - t.terminated) * self.q_table[s_next, a_next]
        td_error = target - self.q_table[s, a]
        alpha = self.alpha(self.env_steps)
        # envs that update the same (s, a) in this step average their TD errors: a sum would multiply alpha
        cells = s * self.q_table.shape[1] + a
        sharing = (cells[:, None] == cells).sum(1)
        np.add.at(self.q_table.reshape(-1), cells, alpha * td_error / sharing)
        self.next_actions = np.where(t.terminated | t.truncated, NO_ACTION, a_next)
        self.env_steps += len(r)
        return {"td_error": float(np.abs(td_error).mean()), "charts/epsilon": self.epsilon(self.env_steps),
                "charts/alpha": alpha}

    def state_dict(self) -> dict[str, Any]:
        # next_actions is left out: at a checkpoint (a sync point) every episode has just ended
        return {"q_table": torch.from_numpy(self.q_table.copy()), "env_steps": self.env_steps,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_table = state["q_table"].numpy().astype(np.float64)
        self.env_steps = state["env_steps"]
        self.rng.bit_generator.state = state["rng"]
        self.next_actions = None

