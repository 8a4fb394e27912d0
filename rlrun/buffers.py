"""Replay memory: preallocated ring buffers of named numpy fields; the rollout of on-policy algorithms (mechanics
only; the math is in the algorithms)."""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rlrun.core import ReplayMemory, Transition
from rlrun.errors import ConfigError


class Rollout:
    """The vector steps an on-policy algorithm has taken since its last update, `length` of them when it is full.
    Its state goes into the algorithm's state_dict (it outlives sync points), so that a resumed run updates on
    exactly the same steps."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.steps: list[Transition] = []

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: Transition) -> bool:
        """Add a vector step; True when the rollout is then full."""
        self.steps.append(step)
        return len(self.steps) >= self.length

    def clear(self) -> None:
        self.steps = []

    def stacked(self) -> Transition:
        """The steps as one Transition whose fields have the leading dimensions (steps, num_envs)."""
        return Transition(**{name: np.stack([getattr(step, name) for step in self.steps])
                             for name in Transition.__dataclass_fields__})

    def state_dict(self) -> list[dict[str, torch.Tensor]]:
        return [{name: torch.from_numpy(np.asarray(value)) for name, value in vars(step).items()} for step in self.steps]

    def load_state_dict(self, state: list[dict[str, torch.Tensor]]) -> None:
        self.steps = [Transition(**{name: value.numpy() for name, value in step.items()}) for step in state]


class ReplayBuffer(ReplayMemory):
    """Holds the last `capacity` rows of each field; adding past capacity overwrites the oldest rows.

    `fields` maps a name to (shape of one row, dtype); every field is allocated up front, so memory
    use is fixed from the first step.
    """

    def __init__(self, capacity: int, fields: Mapping[str, tuple[tuple[int, ...], np.dtype | type]]):
        check_fits_in_memory(sum(capacity * int(np.prod(shape)) * np.dtype(dtype).itemsize
                                 for shape, dtype in fields.values()))
        self.capacity = capacity
        self.data = {name: np.zeros((capacity, *shape), dtype) for name, (shape, dtype) in fields.items()}
        self.next_row = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return sum(values.nbytes for values in self.data.values())

    def add(self, **rows: np.ndarray) -> None:
        """Append a batch (leading dimension = rows) to every field, wrapping around at the end."""
        count = len(next(iter(rows.values())))
        if rows.keys() != self.data.keys():
            raise ValueError(f"add() needs exactly the fields {sorted(self.data)}, got {sorted(rows)}")
        if count > self.capacity:  # only the newest `capacity` rows would survive
            rows = {name: values[-self.capacity:] for name, values in rows.items()}
            count = self.capacity
        index = (self.next_row + np.arange(count)) % self.capacity
        for name, values in rows.items():
            self.data[name][index] = values
        self.next_row = (self.next_row + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def state_dict(self) -> dict[str, Any]:
        """The rows held, as tensors that view the buffer's arrays (rlrun.checkpoint.save copies out what it
        writes, so a checkpoint left without the buffer costs no copy), and the write position."""
        return {"fields": {name: torch.from_numpy(values[:self.size]) for name, values in self.data.items()},
                "next_row": self.next_row, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.next_row = state["size"], state["next_row"]
        for name, values in state["fields"].items():
            self.data[name][:self.size] = values.numpy()

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`batch_size` rows drawn uniformly with replacement from the rows held."""
        return self.rows_at(rng.integers(0, self.size, size=batch_size))

    def rows_at(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {name: values[index] for name, values in self.data.items()}


class FrameReplayBuffer(ReplayMemory):
    """A replay buffer for image stacks (`obs` and `next_obs` of shape (C, H, W)) that stores each distinct
    frame once, in a ring of `capacity` frames.

    Stacked Atari observations share C - 1 frames with the previous one, and s' of a step is s of the next:
    stored as stacks, every frame would be held 2C times (8 for Mnih et al.'s 4-frame stacks). Here a row keeps
    the ids of its frames; a frame equal to one of the `recent` frames stored last is not stored again.
    A row whose oldest frame has been overwritten in the ring is never sampled.
    """

    def __init__(self, capacity: int, stack_shape: tuple[int, ...], dtype: np.dtype | type,
                 fields: Mapping[str, tuple[tuple[int, ...], np.dtype | type]], recent: int = 4096):
        stack_size, *frame_shape = stack_shape
        if capacity < 4 * stack_size:
            raise ConfigError(f"algo.buffer_size={capacity} is too small for stacks of {stack_size} frames; "
                              f"use at least {4 * stack_size}")
        self.rows = ReplayBuffer(capacity, {**fields, "obs_frames": ((stack_size,), np.int64),
                                            "next_obs_frames": ((stack_size,), np.int64),
                                            "oldest_frame": ((), np.int64)})
        check_fits_in_memory(capacity * int(np.prod(frame_shape)) * np.dtype(dtype).itemsize + self.rows.nbytes)
        self.frames = np.zeros((capacity, *frame_shape), dtype)
        self.frames_added = 0
        self.recent_limit = min(recent, capacity // 2)
        self.recent_ids: dict[int, int] = {}  # checksum of a recently stored frame -> its id
        self.recent_order: deque[tuple[int, int]] = deque()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.rows.nbytes

    def add(self, obs: np.ndarray, next_obs: np.ndarray, **rows: np.ndarray) -> None:
        """Append a batch of rows: stacks `obs` and `next_obs` (leading dimension = rows) and the other fields."""
        obs_frames, next_obs_frames = self.frame_ids(obs), self.frame_ids(next_obs)
        oldest = np.minimum(obs_frames.min(1), next_obs_frames.min(1))
        self.rows.add(**rows, obs_frames=obs_frames, next_obs_frames=next_obs_frames, oldest_frame=oldest)

    def frame_ids(self, stacks: np.ndarray) -> np.ndarray:
        return np.array([[self.frame_id(frame) for frame in stack] for stack in stacks], dtype=np.int64)

    def frame_id(self, frame: np.ndarray) -> int:
        """The id of a stored frame equal to `frame`, storing it first when none of the recent ones is."""
        checksum = zlib.crc32(np.ascontiguousarray(frame))
        known = self.recent_ids.get(checksum)
        if known is not None and np.array_equal(self.frames[known % len(self.frames)], frame):
            return known
        new_id = self.frames_added
        self.frames[new_id % len(self.frames)] = frame
        self.frames_added += 1
        self.recent_ids[checksum] = new_id
        self.recent_order.append((checksum, new_id))
        while self.recent_order[0][1] < self.frames_added - self.recent_limit:
            old_checksum, old_id = self.recent_order.popleft()
            if self.recent_ids.get(old_checksum) == old_id:
                del self.recent_ids[old_checksum]
        return new_id

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`batch_size` rows drawn uniformly with replacement from the rows whose frames are all still held."""
        first_held = self.frames_added - len(self.frames)
        index = rng.integers(0, len(self.rows), size=batch_size)
        while (lost := self.rows.data["oldest_frame"][index] < first_held).any():
            index[lost] = rng.integers(0, len(self.rows), size=int(lost.sum()))
        batch = self.rows.rows_at(index)
        del batch["oldest_frame"]
        batch["obs"] = self.frames[batch.pop("obs_frames") % len(self.frames)]
        batch["next_obs"] = self.frames[batch.pop("next_obs_frames") % len(self.frames)]
        return batch

    def state_dict(self) -> dict[str, Any]:
        state = self.rows.state_dict()
        state["fields"]["frames"] = torch.from_numpy(self.frames[:min(self.frames_added, len(self.frames))])
        return {**state, "frames_added": self.frames_added}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        fields = dict(state["fields"])
        frames = fields.pop("frames").numpy()
        self.rows.load_state_dict({**state, "fields": fields})
        self.frames[:len(frames)] = frames
        self.frames_added = state["frames_added"]
        self.recent_ids.clear()  # a checkpoint is a sync point: every episode starts afresh
        self.recent_order.clear()


def check_fits_in_memory(nbytes: int) -> None:
    """A one-line error, before anything is allocated, when `nbytes` exceed the memory available now."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ConfigError(f"the replay buffer would need {nbytes / 2**30:.1f} GiB, but only {available / 2**30:.1f} GiB "
                          "of memory is available; lower algo.buffer_size")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
