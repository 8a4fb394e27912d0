"""Checkpoints are data, never code: tensors and plain values, written atomically, read with weights_only=True."""

from __future__ import annotations

import copy
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlrun.core import ConfigError


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to a temp file in the same folder, fsync it, then rename it over `path`.

    A tensor that views part of a larger array (the rows held by a replay buffer that is not full) is written as
    a copy of that part: torch.save writes a tensor's whole storage."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(without_excess_storage(payload), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU without executing any code stored in it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; give the path of a .pt file written by rlrun")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"checkpoint {path} cannot be read safely ({first_line}); it is corrupt or not an rlrun checkpoint") from error
