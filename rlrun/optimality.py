"""How far a learned Q-table is from optimal, for envs that expose their transition model.

Toy-text envs (FrozenLake, Taxi, CliffWalking) publish `env.unwrapped.P[s][a] = [(p, s', r, terminated), ...]`.
From it, with the run's gamma and no time limit:

    Q*(s, a) = sum_{s'} p(s'|s,a) [r + gamma (1 - terminated) max_a' Q*(s', a')]     (value iteration)
    V^pi(s)  = sum_{s'} p(s'|s,pi(s)) [r + gamma (1 - terminated) V^pi(s')]           (policy evaluation)

and at each evaluation the trainer logs
    tabular/q_error_max      = max_{s,a} |Q(s, a) - Q*(s, a)|
    tabular/greedy_value_gap = E_{s0}[V*(s0)] - E_{s0}[V^greedy(s0)],   greedy(s) = argmax_a Q(s, a)
with s0 drawn from the env's initial-state distribution.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from rlrun.core import Agent

TOLERANCE = 1e-10
MAX_SWEEPS = 100_000  # with gamma = 1 an improper policy's value diverges: stop there


class TabularModel:
    """A finite MDP as flat transition arrays, for fast Bellman backups."""

    def __init__(self, transitions: dict[int, dict[int, list[tuple[float, int, float, bool]]]], gamma: float):
        self.num_states = len(transitions)
        self.num_actions = len(transitions[0])
        rows = [(s, a, p, s_next, r, done) for s, by_action in transitions.items()
                for a, outcomes in by_action.items() for p, s_next, r, done in outcomes]
        s, a, p, s_next, r, done = (np.array(column) for column in zip(*rows))
        self.state_action = s * self.num_actions + a
        self.next_state = s_next.astype(int)
        self.continuing = p * (1.0 - done) * gamma  # no bootstrap past a termination
        self.expected_reward = self._sum_by_state_action(p * r)

    def _sum_by_state_action(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.state_action, weights=weights,
                           minlength=self.num_states * self.num_actions).reshape(self.num_states, self.num_actions)

    def backup(self, next_values: np.ndarray) -> np.ndarray:
        """Q(s, a) = E[r] + gamma E[(1 - terminated) V(s')] for every (s, a)."""
        return self.expected_reward + self._sum_by_state_action(self.continuing * next_values[self.next_state])

    def optimal_q(self) -> np.ndarray:
        q = np.zeros((self.num_states, self.num_actions))
        for _ in range(MAX_SWEEPS):
            q, previous = self.backup(q.max(1)), q
            if np.abs(q - previous).max() < TOLERANCE:
                break
        return q

    def policy_values(self, policy: np.ndarray) -> np.ndarray:
        values = np.zeros(self.num_states)
        states = np.arange(self.num_states)
        for _ in range(MAX_SWEEPS):
            values, previous = self.backup(values)[states, policy], values
            if np.abs(values - previous).max() < TOLERANCE:
                break
        return values


class OptimalityGap:
    """Called by the trainer at each evaluation with the agent; returns the two tabular/* metrics."""

    def __init__(self, model: TabularModel, initial_distribution: np.ndarray):
        self.model = model
        self.initial_distribution = initial_distribution
        self.optimal_q = model.optimal_q()
        self.optimal_start_value = float(initial_distribution @ self.optimal_q.max(1))

    def __call__(self, agent: Agent) -> dict[str, float]:
        q_table = agent.q_table
        greedy_values = self.model.policy_values(q_table.argmax(1))
        return {"tabular/q_error_max": float(np.abs(q_table - self.optimal_q).max()),
                "tabular/greedy_value_gap": self.optimal_start_value - float(self.initial_distribution @ greedy_values)}


def optimality_gap_for(env: gym.Env, agent: Agent) -> OptimalityGap | None:
    """An OptimalityGap, with the agent's discount, when the agent keeps a Q-table (rlrun.core.Agent's optional
    `q_table` and `gamma`) and the env publishes a model indexed like its observations."""
    base = env.unwrapped
    model_transitions = getattr(base, "P", None)  # the toy-text envs' published model: not part of gym.Env
    initial_distribution = getattr(base, "initial_state_distrib", None)
    if (agent.q_table is None or agent.gamma is None or model_transitions is None or initial_distribution is None
            or not isinstance(env.observation_space, gym.spaces.Discrete)
            or env.observation_space.n != len(model_transitions)):
        return None
    return OptimalityGap(TabularModel(model_transitions, agent.gamma), np.asarray(initial_distribution, dtype=float))
