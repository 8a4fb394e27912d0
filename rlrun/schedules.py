"""Hyperparameters that change with training: exploration rates and learning rates over env steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlrun.errors import ConfigError

KINDS = ("constant", "linear", "exponential")


@dataclass(frozen=True)
class Schedule:
    """`start` at step 0, moving to `end` over `decay_steps` env steps.

    constant: always `start`; linear: straight line to `end`, reached at `decay_steps`;
    exponential: end + (start - end) exp(-step / decay_steps), so `decay_steps` is the e-folding time.
    """

    start: float
    end: float = 0.0
    decay_steps: int = 1
    schedule: str = "constant"

    def __call__(self, step: int) -> float:
        if self.schedule == "linear":
            return self.start + min(1.0, step / self.decay_steps) * (self.end - self.start)
        if self.schedule == "exponential":
            return self.end + (self.start - self.end) * math.exp(-step / self.decay_steps)
        return self.start


def schedule_from(key: str, settings: Mapping[str, Any], valid: Callable[[float], bool], must_be: str) -> Schedule:
    """A Schedule from the config node `key`, with one-line errors naming the bad value."""
    try:
        schedule = Schedule(**settings)
    except TypeError as error:
        raise ConfigError(f"{key} takes start, end, decay_steps and schedule ({error})") from error
    if schedule.schedule not in KINDS:
        raise ConfigError(f"{key}.schedule={schedule.schedule!r} is unknown; use one of {', '.join(KINDS)}")
    for name in ("start",) if schedule.schedule == "constant" else ("start", "end"):
        value = getattr(schedule, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
            raise ConfigError(f"{key}.{name}={value!r} is invalid: it must be {must_be}")
    return schedule


LR_SCHEDULES = ("constant", "linear")


class LearningRateSchedule:
    """`algo.lr_schedule`, one of LR_SCHEDULES: constant keeps each optimizer param group's learning rate; linear
    decays it to 0 over the run's `total_steps` env steps (a stable policy at the end of the budget)."""

    def __init__(self, lr_schedule: str, total_steps: int):
        self.decay_over = total_steps if lr_schedule == "linear" else None

    def apply(self, optimizer: Any, env_steps: int) -> float:
        """Set the learning rates for `env_steps`; call before each optimizer step. Returns the first param group's
        rate, which the algorithms log as charts/learning_rate."""
        if self.decay_over is not None:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])  # kept in the optimizer's state_dict, hence in checkpoints
                group["lr"] = group["initial_lr"] * max(0.0, 1.0 - env_steps / self.decay_over)
        return optimizer.param_groups[0]["lr"]
