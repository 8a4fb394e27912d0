"""Tabular Q-learning (Watkins 1989): off-policy TD control towards Q*.

Sources: the seeds `002` (Q-learning from data, stop-grad target, terminal base case) and `000`
(tabular Q-learning as SGD on the Bellman error); Sutton & Barto (2018), section 6.5.

For each transition (s, a, r, s') of every env, with learning rate alpha:

    y        = r + gamma * max_a' Q[s', a']      if the episode goes on or was cut by a time limit
    y        = r                                 if s' is terminal (terminated): no bootstrap
    Q[s, a] += alpha * (y - Q[s, a])

Transitions of one vector step that share (s, a) average their TD errors (y - Q[s, a]) in one update
(rlrun.tabular). Behaviour policy: epsilon-greedy in Q (ties broken at random); the greedy policy
(argmax, first index among ties) is evaluated. epsilon and alpha follow rlrun.schedules.Schedule over
env steps.
"""

from __future__ import annotations

from rlrun.core import Transition
from rlrun.tabular import TabularAgent


class QLearning(TabularAgent):
    def observe(self, t: Transition) -> dict[str, float]:
        target = t.reward + self.gamma * (1.0 - t.terminated) * self.q_table[t.next_obs].max(1)
        return self.td_step(t.obs, t.action, target)
