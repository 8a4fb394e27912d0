"""Checkpoints are data, never code: tensors and plain values, written atomically, read with weights_only=True.

The Checkpointer decides what a run's checkpoints hold and where they go:

    checkpoints/last.pt         every checkpoint.every env steps (a sync point) and at the end: resume continues it
    checkpoints/step_<N>.pt     with checkpoint.keep = K > 1, hard links to the K - 1 interval checkpoints before
    checkpoints/best.pt         the agent at its best evaluation so far (no replay buffer)
    checkpoints/interrupted.pt  the latest weights when training stops on an error or a signal, to evaluate

A payload holds the agent's state, its replay buffer (in last.pt and interrupted.pt, when allowed), the
trainer's progress, the recorder's state, the random generators, the observation statistics and the run's
config (data to compare, never to build from).
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import random
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from rlrun.errors import ConfigError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".rlrun-tmp"
REPLAY_SAVE_LIMIT = 2**30  # bytes: larger replay buffers are saved only with checkpoint.save_replay=true


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` atomically (write_atomically).

    A tensor that views part of a larger array (the rows held by a replay buffer that is not full) is written as
    a copy of that part: torch.save writes a tensor's whole storage."""
    write_atomically(path, lambda file: torch.save(without_excess_storage(payload), file))


def write_text(path: str | Path, text: str) -> None:
    """Write a text file (summary.json, eval.json) atomically, as checkpoints are written."""
    write_atomically(path, lambda file: file.write(text.encode()))


def write_atomically(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write(file)` into a temp file in the same folder, fsync it, then rename it over `path`: a reader (or a run
    killed at any point) sees the old file or the new one, never a part. The file gets the mode the umask gives,
    as any file the user creates would. A failed write removes its temp file; a killed one leaves it, and the
    next run in the folder removes it (remove_leftover_temp_files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            writer = WriteErrorKept(file)
            try:
                write(writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class WriteErrorKept:
    """A file's write and flush that keep the OSError they raise: torch.save reports a failed write (a full disk)
    as a RuntimeError about the position in the file, and the OSError says what happened."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        return self.kept(self.file.write, data)

    def flush(self) -> None:
        self.kept(self.file.flush)

    def kept(self, operation: Callable[..., Any], *args: Any) -> Any:
        try:
            return operation(*args)
        except OSError as error:
            self.error = error
            raise


def remove_leftover_temp_files(folder: Path) -> None:
    """The temp files of writes that a kill interrupted (the files they would have replaced are intact)."""
    for leftover in folder.glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def without_excess_storage(node: Any) -> Any:
    """`node` with every tensor that views part of a larger storage replaced by a copy of that part."""
    if isinstance(node, torch.Tensor):
        return node.clone() if node.untyped_storage().nbytes() > node.nbytes else node
    if isinstance(node, dict):
        compacted = copy.copy(node)  # keeps the type and attributes (a module state_dict's _metadata)
        for key, value in node.items():
            compacted[key] = without_excess_storage(value)
        return compacted
    if isinstance(node, list):
        return [without_excess_storage(value) for value in node]
    return node


def tensor_bytes(node: Any) -> int:
    """The bytes of every tensor in a nested state."""
    if isinstance(node, torch.Tensor):
        return node.nbytes
    if isinstance(node, dict):
        return sum(tensor_bytes(value) for value in node.values())
    if isinstance(node, (list, tuple)):
        return sum(tensor_bytes(value) for value in node)
    return 0


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU without executing any code stored in it. The tensors of a checkpoint in
    torch's zip format are mapped from the file and read as they are used: a resume's early checks open one
    with a GB-sized replay buffer without reading that buffer."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; give the path of a .pt file written by rlrun")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise ConfigError(f"checkpoint {path} cannot be read safely ({why_unreadable(error)}); it is corrupt or not "
                          "an rlrun checkpoint") from error


def why_unreadable(error: BaseException) -> str:
    """The first sentence of the reason torch gives (the code a pickle asks for, where it asks for some), never
    torch's advice to load with weights_only=False, which would run that code."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
    if not reason or "weights_only" in reason:
        return type(error).__name__
    return reason.split(". ")[0].rstrip(".")


def rng_state() -> dict[str, Any]:
    """Python's, numpy's and torch's global random generators, as tensors and plain values."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def changed_keys(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs (plain nested dicts)."""
    if not (isinstance(saved, dict) and isinstance(wanted, dict)):
        return [] if saved == wanted else [prefix]
    keys = sorted(set(saved) | set(wanted), key=lambda key: list(wanted).index(key) if key in wanted else len(wanted))
    return [changed for key in keys
            for changed in changed_keys(saved.get(key), wanted.get(key), f"{prefix}.{key}" if prefix else key)]


def optimizers(agent: Any) -> list[torch.optim.Optimizer]:
    return [value for value in vars(agent).values() if isinstance(value, torch.optim.Optimizer)]


def optimizer_settings(agent: Any) -> list[list[dict[str, Any]]]:
    """The hyperparameters of every param group of the agent's optimizers (learning rate, eps, betas, ...)."""
    return [[{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
            for optimizer in optimizers(agent)]


def keep_optimizer_settings(agent: Any, built: list[list[dict[str, Any]]]) -> None:
    """After load_state_dict, which brings back the param groups of the checkpoint: the settings the agent was built
    with where they differ. A learning rate that a schedule has moved keeps its progress: the schedule's base
    (`initial_lr`) becomes the new rate and the current rate is scaled with it. Unchanged settings stay exactly
    as they were saved."""
    for optimizer, groups in zip(optimizers(agent), built):
        for group, settings in zip(optimizer.param_groups, groups):
            for key, value in settings.items():
                if key == "lr":
                    base = group.get("initial_lr", group["lr"])
                    if value != base:
                        group["lr"] = value * group["lr"] / base if base else value
                        if "initial_lr" in group:
                            group["initial_lr"] = value
                elif key != "initial_lr" and group.get(key) != value:
                    group[key] = value


class Checkpointer:
    """Writes and restores the checkpoints of one run folder.

    The trainer hands each save the state of the other services (its progress, the recorder's state, the
    observation statistics) as plain values. `save_replay` is checkpoint.save_replay: True always saves the
    agent's replay buffer in last.pt, False never, None when it is under REPLAY_SAVE_LIMIT.
    """

    def __init__(self, run_dir: Path, agent: Any, config: dict[str, Any], keep: int = 1,
                 save_replay: bool | None = None):
        self.folder = run_dir / "checkpoints"
        self.agent = agent
        self.config = config
        self.keep = keep
        self.save_replay = save_replay
        self.last_step: int | None = None  # env step of the last.pt written or restored
        self.warned_replay = False
        remove_leftover_temp_files(self.folder)

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    def save(self, name: str, parts: dict[str, Any]) -> None:
        """checkpoints/<name>: the agent, its replay buffer where wanted, and `parts` (plain state of the other
        services, keyed by their payload names)."""
        payload = {"agent": self.agent.state_dict(), **parts, "rng": rng_state(), "config": self.config}
        replay = self.replay_state() if name != "best.pt" else None
        if replay is not None:
            payload["replay_buffer"] = replay
        save(self.folder / name, payload)
        if name == "last.pt":
            self.last_step = parts["env_steps"]

    def save_interval(self, parts: dict[str, Any]) -> None:
        """last.pt, and with keep = K > 1 also step_<N>.pt (a hard link to it) for the last K - 1."""
        self.save("last.pt", parts)
        if self.keep > 1:
            step_path = self.folder / f"step_{parts['env_steps']}.pt"
            step_path.unlink(missing_ok=True)
            os.link(self.last_path, step_path)
            kept = sorted(self.folder.glob("step_*.pt"), key=lambda path: int(path.stem.split("_")[1]))
            for old in kept[:-(self.keep - 1)]:
                old.unlink()

    def replay_state(self) -> dict[str, Any] | None:
        """The agent's replay buffer as checkpoint.save_replay allows, else None (with a warning the first time a
        buffer is left out for its size)."""
        buffer = self.agent.replay_buffer
        if buffer is None or self.save_replay is False:
            return None
        state = buffer.state_dict()
        size = tensor_bytes(state)
        if self.save_replay is None and size > REPLAY_SAVE_LIMIT:
            if not self.warned_replay:
                log.warning("warning: the replay buffer (%.1f GiB) is not saved in checkpoints: a resumed run starts "
                            "with an empty buffer; set checkpoint.save_replay=true to save it", size / 2**30)
                self.warned_replay = True
            return None
        return state

    def restore(self, payload: dict[str, Any]) -> None:
        """Put the agent, its replay buffer (where the checkpoint has it) and the random generators back as they
        were; the caller restores the other parts from the payload. Where this run's config differs from the
        checkpoint's, the optimizers keep the settings the agent was built with (a new learning rate applies),
        and a change the saved state cannot take is refused, naming the keys that changed."""
        built = optimizer_settings(self.agent)
        changed = changed_keys(payload["config"], self.config)
        try:
            self.agent.load_state_dict(payload["agent"])
            if "replay_buffer" in payload and self.agent.replay_buffer is not None:
                self.agent.replay_buffer.load_state_dict(payload["replay_buffer"])
        except (RuntimeError, KeyError, ValueError, IndexError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"{self.last_path} does not fit the agent this run builds ({reason}); the keys "
                              f"changed since it was written: {', '.join(changed) or 'none'}; resume without "
                              "those changes, or start the new settings in another folder") from error
        keep_optimizer_settings(self.agent, built)
        restore_rng_state(payload["rng"])
        self.last_step = payload["env_steps"]

    def last_good(self) -> str:
        """Where a diverged run can go back to, for its error line."""
        if self.last_step is None:
            return "no checkpoint was written before"
        return f"the last good checkpoint is {self.last_path} (env step {self.last_step})"
