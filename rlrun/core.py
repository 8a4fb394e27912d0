"""The contract between the trainer and the algorithms: one Transition type and the Agent protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # numpy is imported only when a run starts, keeping `rlrun --help` fast
    import numpy as np


class ConfigError(Exception):
    """A mistake the user can fix: the CLI prints the message on one line and exits with code 2."""


@dataclass(frozen=True)
class Transition:
    """One vector-env step; every field has the leading dimension num_envs.

    `next_obs` is the true s' of each env: where an episode ended, it is the episode's final
    observation, not the first observation of the next episode (which the vector env returns).
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class Agent(Protocol):
    """What the trainer needs from an algorithm.

    Class attributes `observation_spaces` and `action_spaces` list the gymnasium space types the
    algorithm supports; the CLI checks them before building anything.

    `observe` decides by itself when to learn and returns the metrics to log: a name without a
    slash is logged as `losses/<name>`, a name with one (`charts/epsilon`) as it is.
    Agents never log or write files.
    """

    observation_spaces: tuple[type, ...]
    action_spaces: tuple[type, ...]

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray: ...

    def observe(self, transition: Transition) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
