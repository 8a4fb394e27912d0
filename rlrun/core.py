"""The contract between the trainer and the algorithms: the Transition type, what the run builder hands an
algorithm (RunContext), and the Agent base class with its optional capabilities.

An algorithm is a subclass of `Agent` built as

    AgentClass(observation_space, action_space, context, **hyperparameters)

where `hyperparameters` are the keys of its `configs/algo/<name>.yaml` (all but `_target_`), checked first
against the class's `hyperparameter_rules`. It can live in `rlrun/algos/` or in any module on PYTHONPATH,
with its YAML in a `--config-dir` folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # numpy and torch are imported only when a run starts, keeping `rlrun --help` fast
    import numpy as np
    import torch
    from torch import nn

    from rlrun.validation import Rule


@dataclass(frozen=True)
class Transition:
    """One vector-env step; every field has the leading dimension num_envs.

    `next_obs` is the true s' of each env: where an episode ended, it is the episode's final
    observation, not the first observation of the next episode (which the vector env returns).
    `terminated` marks a true end (no bootstrap past it); `truncated` a cut by a time limit or a sync point
    (bootstrap from s').
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


@dataclass(frozen=True)
class RunContext:
    """What the run builder passes every algorithm besides its hyperparameters.

    make_net(in_shape, out_dim, **options) builds a network from the `network` config group: `in_shape` is an
    int for flat inputs or (C, H, W) for images (ObservationEncoder.input_shape); `out_dim` an int, or a tuple
    for several heads on shared hidden layers. `device` is where the networks run; `seed` seeds the
    algorithm's own random draws; `total_steps` is the run's budget in env steps (for decaying schedules).
    """

    make_net: Callable[..., nn.Module]
    device: torch.device
    seed: int
    total_steps: int


class ReplayMemory(ABC):
    """A replay buffer as the checkpointer sees it: its rows go into last.pt (not into best.pt, and not past the
    size limit unless checkpoint.save_replay=true), restored before training resumes."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Agent(ABC):
    """What the trainer needs from an algorithm.

    `observation_spaces` and `action_spaces` list the gymnasium space types it supports; they are checked
    before the training envs are built. `hyperparameter_rules` maps hyperparameter names to the rule their
    values must satisfy (rlrun.validation); keys without a rule are passed as they are. `config_checks` are
    functions of the hyperparameters that return why they cannot work together (a refused start), or None;
    `config_warnings` the same for a warning to show before the run starts.

    `observe` decides by itself when to learn and returns the metrics to log: a name without a slash is
    logged as `losses/<name>`, a name with one (`charts/epsilon`) as it is. Agents never log or write files.

    `state_dict` holds tensors and plain values only (checkpoints are data, never code), without the replay
    buffer. Checkpoints at the checkpoint.every interval are sync points: every running episode ends there
    as a time-limit truncation, so an agent need not save per-episode state (n-step windows, the next
    action of SARSA) that a sync point empties; state that outlives episodes (an unfinished rollout,
    finished episodes awaiting an update) must be saved.

    Optional capabilities, None where the algorithm has none:
    - `gamma`: the discount the algorithm optimizes (the tabular optimality gap is computed with it);
    - `replay_buffer`: a ReplayMemory the checkpointer saves apart from `state_dict`;
    - `q_table`: a tabular Q[s, a] array; with an env that publishes its model, each evaluation also logs
      how far it is from Q* (rlrun.optimality).
    """

    observation_spaces: ClassVar[tuple[type, ...]]
    action_spaces: ClassVar[tuple[type, ...]]
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = {}
    config_checks: ClassVar[tuple[Callable[[Mapping[str, Any]], str | None], ...]] = ()
    config_warnings: ClassVar[tuple[Callable[[Mapping[str, Any]], str | None], ...]] = ()

    gamma: float | None = None
    replay_buffer: ReplayMemory | None = None
    q_table: np.ndarray | None = None

    @abstractmethod
    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        """Actions for a batch of observations: exploring in training, the deterministic policy to evaluate."""

    @abstractmethod
    def observe(self, transition: Transition) -> dict[str, float]:
        """Take in one vector step; learn when the algorithm decides to; return the metrics to log."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
