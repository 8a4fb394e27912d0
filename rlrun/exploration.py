"""Epsilon-greedy action selection over rows of action values."""

from __future__ import annotations

import numpy as np


def epsilon_greedy(q_values: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Per row: a uniformly random action with probability epsilon, else a greedy one (ties broken at random)."""
    rows, actions = q_values.shape
    is_best = q_values == q_values.max(1, keepdims=True)
    greedy = (rng.random((rows, actions)) * is_best).argmax(1)
    # floor(U * actions) is uniform over the actions, and cheaper than Generator.integers for a small batch
    random_actions = (rng.random(rows) * actions).astype(np.int64)
    return np.where(rng.random(rows) < epsilon, random_actions, greedy)
