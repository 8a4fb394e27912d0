"""The replay ring buffer: preallocation, wrap-around, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from rlrun.buffers import ReplayBuffer


def buffer(capacity: int) -> ReplayBuffer:
    return ReplayBuffer(capacity, {"obs": ((2,), np.float32), "action": ((), np.int64)})


def rows(*values: int) -> dict[str, np.ndarray]:
    return {"obs": np.array([[v, -v] for v in values], np.float32), "action": np.array(values)}


def test_fields_are_preallocated_with_their_shapes_and_dtypes():
    memory = buffer(5)
    assert memory.data["obs"].shape == (5, 2) and memory.data["obs"].dtype == np.float32
    assert memory.data["action"].shape == (5,) and memory.data["action"].dtype == np.int64
    assert len(memory) == 0


def test_wraps_around_and_overwrites_the_oldest_rows():
    memory = buffer(4)
    memory.add(**rows(0, 1, 2))
    assert len(memory) == 3 and memory.next_row == 3
    memory.add(**rows(3, 4, 5))  # rows 3, 4, 5 go to slots 3, 0, 1
    assert len(memory) == 4 and memory.next_row == 2
    np.testing.assert_array_equal(memory.data["action"], [4, 5, 2, 3])
    np.testing.assert_array_equal(memory.data["obs"][:, 1], [-4, -5, -2, -3])


def test_a_batch_larger_than_the_capacity_keeps_its_newest_rows():
    memory = buffer(3)
    memory.add(**rows(0, 1, 2, 3, 4))
    assert len(memory) == 3
    assert sorted(memory.data["action"]) == [2, 3, 4]


def test_samples_only_rows_held_and_keeps_fields_aligned():
    memory = buffer(10)
    memory.add(**rows(7, 8, 9))
    batch = memory.sample(200, np.random.default_rng(0))
    assert batch["obs"].shape == (200, 2) and batch["action"].shape == (200,)
    assert set(batch["action"]) == {7, 8, 9}  # never an empty slot
    np.testing.assert_array_equal(batch["obs"][:, 0], batch["action"])


def test_adding_the_wrong_fields_is_an_error():
    with pytest.raises(ValueError, match="fields"):
        buffer(3).add(obs=np.zeros((1, 2)))
