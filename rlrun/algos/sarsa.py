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

Transitions of one vector step that share (s, a) average their TD errors (y - Q[s, a]) in one update
(rlrun.tabular).

Across an autoreset the next action is chosen afresh in the new episode's first state; it never
serves as a' for the previous episode's last transition. The greedy policy (argmax, first index
among ties) is evaluated. epsilon and alpha follow rlrun.schedules.Schedule over env steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlrun.core import Transition
from rlrun.exploration import epsilon_greedy
from rlrun.tabular import TabularAgent

NO_ACTION = -1


class Sarsa(TabularAgent):
    next_actions: np.ndarray | None = None  # a' per env, chosen in observe, taken by the next act

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        actions = super().act(obs, explore)
        if explore and self.next_actions is not None:
            actions = np.where(self.next_actions != NO_ACTION, self.next_actions, actions)
            self.next_actions = None
        return actions

    def observe(self, t: Transition) -> dict[str, float]:
        a_next = epsilon_greedy(self.q_table[t.next_obs], self.epsilon(self.env_steps), self.rng)
        target = t.reward + self.gamma * (1.0 - t.terminated) * self.q_table[t.next_obs, a_next]
        metrics = self.td_step(t.obs, t.action, target)
        self.next_actions = np.where(t.terminated | t.truncated, NO_ACTION, a_next)
        return metrics

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # next_actions is not saved: at a checkpoint (a sync point) every episode has just ended
        super().load_state_dict(state)
        self.next_actions = None
