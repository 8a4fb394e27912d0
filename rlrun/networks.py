"""Network builders shared by the neural algorithms, and the observation encoding they all use."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.core import ConfigError

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def mlp(in_dim: int, out_dim: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh") -> nn.Sequential:
    """in_dim -> hidden layers with `activation` -> out_dim (linear output)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"network.activation={activation!r} is unknown; use one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `auto` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA GPU; use device=cpu or device=auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is unknown; use cpu, cuda or auto")
    return torch.device(name)


class ObservationEncoder:
    """Turns a batch of observations into a float tensor: Box is flattened, Discrete is one-hot."""

    def __init__(self, space: gym.Space, device: torch.device):
        self.device = device
        if isinstance(space, gym.spaces.Discrete):
            self.num_states: int | None = int(space.n)
            self.dim = self.num_states
        else:
            self.num_states = None
            self.dim = int(np.prod(space.shape))

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(obs, device=self.device)
        if self.num_states is not None:
            return nn.functional.one_hot(x.long(), self.num_states).float()
        return x.float().reshape(x.shape[0], self.dim)
