"""The replay ring buffer: preallocation, wrap-around, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from rlrun.buffers import FrameReplayBuffer, ReplayBuffer
from rlrun.errors import ConfigError


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


def test_a_buffer_larger_than_the_free_memory_is_refused_before_allocation():
    with pytest.raises(ConfigError, match=r"would need [0-9.]+ GiB.*lower algo.buffer_size"):
        ReplayBuffer(10**13, {"obs": ((4,), np.float32)})


def stacked_steps(episode_lengths: list[int], stack: int = 4, size: int = 84, seed: int = 0):
    """(obs, next_obs) of episodes of 4-frame stacks as gymnasium's FrameStackObservation gives them: a new
    episode's stack repeats its first frame, each step drops the oldest frame and appends a new one."""
    rng = np.random.default_rng(seed)
    for length in episode_lengths:
        frames = [rng.integers(0, 256, (size, size), dtype=np.uint8)] * stack
        for _ in range(length):
            obs = np.stack(frames[-stack:])
            frames.append(rng.integers(0, 256, (size, size), dtype=np.uint8))
            yield obs, np.stack(frames[-stack:])


def frame_buffer(capacity: int) -> FrameReplayBuffer:
    return FrameReplayBuffer(capacity, (4, 84, 84), np.uint8, {"action": ((), np.int64)})


def fill(memory: FrameReplayBuffer, steps) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    originals = {}
    for row, (obs, next_obs) in enumerate(steps):
        memory.add(obs=obs[None], next_obs=next_obs[None], action=np.array([row]))
        originals[row] = obs, next_obs
    return originals


def assert_samples_match(memory: FrameReplayBuffer, originals: dict, draws: int = 300) -> np.ndarray:
    batch = memory.sample(draws, np.random.default_rng(1))
    for row, obs, next_obs in zip(batch["action"], batch["obs"], batch["next_obs"]):
        np.testing.assert_array_equal(obs, originals[row][0])
        np.testing.assert_array_equal(next_obs, originals[row][1])
    return batch["action"]


def test_stacked_frames_take_one_frame_of_memory_per_transition():
    capacity = 2000
    memory = frame_buffer(capacity)
    fill(memory, stacked_steps([500] * 4))
    frame_bytes = 84 * 84
    assert memory.frames_added == 4 * 501  # each episode's first frame once, then one new frame per step
    assert memory.nbytes <= 1.02 * capacity * frame_bytes  # stacks of obs and next_obs would take 8x that
    assert memory.nbytes >= capacity * frame_bytes


def test_sampled_stacks_are_the_observations_stored():
    memory = frame_buffer(1000)
    originals = fill(memory, stacked_steps([30, 1, 200, 7]))
    assert_samples_match(memory, originals)


def test_rows_whose_frames_were_overwritten_are_never_sampled():
    memory = frame_buffer(100)  # 100 frames, 100 rows: short episodes need more frames than rows
    originals = fill(memory, stacked_steps([1, 2, 3] * 40))
    sampled = assert_samples_match(memory, originals, draws=1000)
    assert sampled.min() >= len(originals) - 100  # only rows still held


def test_frame_buffer_round_trips_through_its_state_dict():
    memory = frame_buffer(300)
    originals = fill(memory, stacked_steps([250, 120]))
    restored = frame_buffer(300)
    restored.load_state_dict(memory.state_dict())
    assert_samples_match(restored, originals)
    assert restored.frames_added == memory.frames_added and len(restored) == len(memory)
