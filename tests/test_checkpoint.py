"""Checkpoints: atomic writes, weights_only reads, clear errors for bad files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from rlrun import checkpoint
from rlrun.errors import ConfigError


def test_round_trip_with_tensors_and_plain_values(tmp_path):
    payload = {"agent": {"w": torch.arange(3.0)}, "env_steps": 7, "config": {"algo": {"lr": 0.1}, "ids": [1, 2]},
               "rng": {"python": (3, tuple(range(5)), None)}, "best": float("-inf")}
    checkpoint.save(tmp_path / "ckpt" / "last.pt", payload)
    loaded = checkpoint.load(tmp_path / "ckpt" / "last.pt")
    assert torch.equal(loaded["agent"]["w"], payload["agent"]["w"])
    assert {k: v for k, v in loaded.items() if k != "agent"} == {k: v for k, v in payload.items() if k != "agent"}
    assert os.listdir(tmp_path / "ckpt") == ["last.pt"]  # no temp file left behind


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"env_steps": 1})
    with pytest.raises(Exception):
        checkpoint.save(path, {"env_steps": 2, "unpicklable": lambda: None})
    assert checkpoint.load(path) == {"env_steps": 1}
    assert os.listdir(tmp_path) == ["last.pt"]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"agent": RunsCode()}, f, protocol=2)
    with pytest.raises(ConfigError, match="cannot be read safely"):
        checkpoint.load(path)
    assert not (tmp_path / "pwned.txt").exists() and not os.path.exists("pwned.txt")


def test_missing_and_truncated_checkpoints_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.pt")
    path = tmp_path / "cut.pt"
    checkpoint.save(path, {"agent": {"w": torch.zeros(1000)}})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="cannot be read safely"):
        checkpoint.load(path)


def test_a_view_of_part_of_an_array_is_written_as_that_part_only(tmp_path):
    rows = np.arange(10**6, dtype=np.float32)
    held = torch.from_numpy(rows[:1000])  # what a replay buffer that is not full hands out
    module_state = torch.nn.Linear(2, 2).state_dict()
    checkpoint.save(tmp_path / "last.pt", {"replay": [held], "net": module_state})
    assert (tmp_path / "last.pt").stat().st_size < 100_000  # the whole array is 4 MB
    loaded = checkpoint.load(tmp_path / "last.pt")
    assert torch.equal(loaded["replay"][0], held)
    assert loaded["net"]._metadata == module_state._metadata  # the module state_dict keeps its version data
    assert held.untyped_storage().data_ptr() == torch.from_numpy(rows).untyped_storage().data_ptr()  # untouched
