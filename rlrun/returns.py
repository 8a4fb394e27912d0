"""Math that several algorithms share: returns, advantages, target-network averaging and update schedules.

Each function states its equation; the algorithms that call it still show their own targets and losses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

MAX_GRADIENT_STEPS_PER_ENV_STEP = 8


def gae(rewards: Any, values: Any, next_values: Any, terminated: Any, truncated: Any, gamma: float,
        gae_lambda: float) -> Any:
    """Generalized advantage estimation (Schulman et al. 2016), backwards in time:

        delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)
        A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1},        A_T = 0,  done_t = terminated_t or truncated_t

    Every argument has shape (T, num_envs): numpy arrays, or torch tensors (then `terminated` and `truncated` as
    0/1 floats), and the advantages are of the same kind. `next_values` is V of the true next observations s'_t,
    so a truncated step bootstraps from the state it was cut at and a terminated one from nothing.
    """
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    decays = gamma * gae_lambda * (1.0 - terminated) * (1.0 - truncated)  # gamma lambda (1 - done_t)
    advantage = deltas[-1]
    advantages = [advantage]
    for t in reversed(range(len(deltas) - 1)):
        advantage = deltas[t] + decays[t] * advantage
        advantages.append(advantage)
    stack = torch.stack if isinstance(deltas, torch.Tensor) else np.stack
    return stack(advantages[::-1])


def returns_to_go(rewards: np.ndarray, gamma: float, bootstrap_value: float = 0.0) -> np.ndarray:
    """R_t = r_t + gamma R_{t+1} over one episode's rewards r_0 .. r_{T-1}, with R_T = bootstrap_value
    (0 after a termination, V(s_T) after a time-limit truncation):

        R_t = sum_{k=0}^{T-1-t} gamma^k r_{t+k} + gamma^{T-t} R_T
    """
    returns = np.empty(len(rewards), dtype=np.float32)
    ret = bootstrap_value
    for t in reversed(range(len(rewards))):
        ret = rewards[t] + gamma * ret
        returns[t] = ret
    return returns


def n_step_return(rewards: Iterable[float], gamma: float) -> tuple[float, float]:
    """(R, gamma^k) for the k rewards r_t .. r_{t+k-1} of an n-step window (k <= n):

        R = sum_{i=0}^{k-1} gamma^i r_{t+i},   the target then adds gamma^k (1 - terminated) V(s_{t+k})
    """
    rewards = list(rewards)
    return sum(gamma ** i * reward for i, reward in enumerate(rewards)), gamma ** len(rewards)


def polyak_update(targets: Iterable[torch.Tensor], sources: Iterable[torch.Tensor], tau: float) -> None:
    """theta' <- theta' + tau (theta - theta') for each target tensor theta' and its source theta
    (tau = 1: a hard copy)."""
    with torch.no_grad():
        for target, source in zip(targets, sources):
            target.lerp_(source, tau)


def intervals_passed(before: int, after: int, every: int) -> int:
    """How many multiples of `every` lie in (before, after]: the rounds of updates due after a vector step that
    took the env step count from `before` to `after` (intervals count env steps summed over all envs)."""
    return after // every - before // every


def replay_ratio_warning(hyperparameters: Mapping[str, Any]) -> str | None:
    """A warning when an off-policy algorithm makes more than MAX_GRADIENT_STEPS_PER_ENV_STEP updates per env step:
    most often `train_every` overridden alone on a preset that trains in large rounds, which multiplies the
    updates and slows the run to a crawl."""
    per_env_step = hyperparameters["gradient_steps"] / hyperparameters["train_every"]
    if per_env_step <= MAX_GRADIENT_STEPS_PER_ENV_STEP:
        return None
    train_every = hyperparameters["train_every"]
    return (f"algo.gradient_steps={hyperparameters['gradient_steps']} every algo.train_every={train_every} env steps "
            f"is {per_env_step:g} gradient steps per env step, which trains slowly; set the two together "
            f"(algo.train_every={train_every} algo.gradient_steps=1 is one update per round)")
