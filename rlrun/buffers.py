"""Replay memory: a preallocated ring buffer of named numpy fields (mechanics only; the math is in the algorithms)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class ReplayBuffer:
    """Holds the last `capacity` rows of each field; adding past capacity overwrites the oldest rows.

    `fields` maps a name to (shape of one row, dtype); every field is allocated up front, so memory
    use is fixed from the first step.
    """

    def __init__(self, capacity: int, fields: Mapping[str, tuple[tuple[int, ...], np.dtype | type]]):
        self.capacity = capacity
        self.data = {name: np.zeros((capacity, *shape), dtype) for name, (shape, dtype) in fields.items()}
        self.next_row = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

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
        """The rows held, as tensors (for a checkpoint), and the write position."""
        return {"fields": {name: torch.from_numpy(values[:self.size].copy()) for name, values in self.data.items()},
                "next_row": self.next_row, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.next_row = state["size"], state["next_row"]
        for name, values in state["fields"].items():
            self.data[name][:self.size] = values.numpy()

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`batch_size` rows drawn uniformly with replacement from the rows held."""
        index = rng.integers(0, self.size, size=batch_size)
        return {name: values[index] for name, values in self.data.items()}
