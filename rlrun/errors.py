"""User errors: the exceptions a user can fix, shown as one line with exit code 2, and the failure record a
sweep job leaves in its folder. Every command (rlrun, rlrun-eval) presents its errors through `user_errors`."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ConfigError(Exception):
    """A mistake the user can fix: the command prints the message on one line and exits with code 2."""


class TrainingDiverged(ConfigError):
    """A loss became NaN or infinite: training stops and the last good checkpoint stays as it was."""


def in_sweep() -> bool:
    """Whether this process runs a job of a Hydra multirun (a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def user_errors(command: str = "rlrun") -> Iterator[None]:
    """Turn a user mistake into one line on stderr and exit code 2 (a traceback with HYDRA_FULL_ERROR=1).
    In a sweep the error is re-raised after its line: the launcher records the job as failed and runs the others."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        yield
    except (ConfigError, MissingMandatoryValue) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(error, MissingMandatoryValue):
            error = f"{error.full_key} is required: set it on the command line ({error.full_key}=...)"
        print(f"{command}: error: {error}", file=sys.stderr)
        if in_sweep():
            raise
        raise SystemExit(2) from None


@contextmanager
def failure_recorded(job_dir: Path) -> Iterator[None]:
    """A sweep job that raises leaves the traceback in `error.txt` in its folder (rlrun-report lists it as failed).
    A single run reports on the terminal and leaves its folder as it was (a refused resume must not mark it)."""
    if not in_sweep():
        yield
        return
    (job_dir / "error.txt").unlink(missing_ok=True)  # from an earlier attempt of a requeued job
    try:
        yield
    except Exception:
        (job_dir / "error.txt").write_text(traceback.format_exc())
        raise
