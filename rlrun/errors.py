"""User errors: the exceptions a user can fix, shown as one line with exit code 2, and the failure record a
sweep job leaves in its folder. Every command (rlrun, rlrun-eval) presents its errors through `user_errors`."""

from __future__ import annotations

import errno
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


class Interrupted(Exception):
    """Ctrl-C stopped a run: one line with the command that resumes it, exit code 130."""


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
USER_ERRORS_IN_THIS_SWEEP: list[str] = []  # the lines of the jobs of a sweep run in this process that a user error stopped


def in_sweep() -> bool:
    """Whether this process runs a job of a Hydra multirun (a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def user_errors(command: str = "rlrun") -> Iterator[None]:
    """Turn a user mistake into one line on stderr and exit code 2 (a traceback with HYDRA_FULL_ERROR=1), Ctrl-C into
    one line and exit code 130. In a sweep the job's line is printed and the sweep goes on: the block's exception
    is swallowed, the job records it (failure_recorded) and returns no result, and the sweep exits with code 2."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        yield
    except (ConfigError, MissingMandatoryValue, OSError, Interrupted, KeyboardInterrupt) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or (isinstance(error, OSError) and error.errno not in FULL_DISK):
            raise
        print(f"{command}: error: {one_line(error)}", file=sys.stderr)
        if isinstance(error, (Interrupted, KeyboardInterrupt)):
            raise SystemExit(130) from None
        if not in_sweep():
            raise SystemExit(2) from None
        USER_ERRORS_IN_THIS_SWEEP.append(one_line(error))


def one_line(error: BaseException) -> str:
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, MissingMandatoryValue):
        return f"{error.full_key} is required: set it on the command line ({error.full_key}=...)"
    if isinstance(error, OSError):
        return (f"{error.strerror} while writing {error.filename or 'the run folder'}: make room on that disk, or run "
                "in a folder on another disk (hydra.run.dir=...); a run with a checkpoints/last.pt goes on with "
                "rlrun resume=<its folder>")
    if isinstance(error, KeyboardInterrupt):
        return "interrupted before training started"
    return str(error)


class StoppedOnPurpose(Exception):
    """Base of what stops a job that has not failed (a trial an Optuna pruner stopped): no error.txt."""


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
    except StoppedOnPurpose:
        raise
    except Exception:
        (job_dir / "error.txt").write_text(traceback.format_exc())
        raise
