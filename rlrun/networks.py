"""Network builders shared by the neural algorithms, the observation encoding they all use, the stochastic policies of
PPO and A2C with gSDE's state-dependent noise (SAC's too), and the actor and critic modules of the off-policy
actor-critics (DDPG, TD3, SAC)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.errors import ConfigError

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


# fused / foreach: one kernel per optimizer step instead of one per parameter tensor
OPTIMIZERS = {"adam": partial(torch.optim.Adam, fused=True), "rmsprop": partial(torch.optim.RMSprop, foreach=True)}


def make_optimizer(name: str, params: Iterable[Any], lr: float, eps: float, **options: Any) -> torch.optim.Optimizer:
    """The optimizer `name` (a key of OPTIMIZERS) over `params`; `options` are the optimizer's own keywords."""
    return OPTIMIZERS[name](params, lr=lr, eps=eps, **options)


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float | None = None) -> None:
    """One optimizer step on `loss`, the global norm of the gradient of all the optimizer's parameters clipped to
    max_grad_norm (None: not clipped)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_grad_norm)
    optimizer.step()


def compile_if(enabled: bool, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` run through torch.compile when `enabled` (an algorithm's `compile` hyperparameter), else `function`
    itself. The algorithms pass the function that computes their losses from tensors: torch.compile fuses its
    operations, and those of its backward pass, into fewer kernels, at the price of compiling it on the first
    call. The optimizer step stays outside, so that a learning rate that changes every update (lr_schedule=linear)
    does not make torch.compile compile again."""
    return torch.compile(function) if enabled else function


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


NATURE_CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (channels, kernel, stride): Mnih et al. 2015
TRUNK_DEFAULTS = {"mlp": {"hidden_sizes": (64, 64), "activation": "tanh"},
                  "cnn": {"hidden_sizes": (512,), "activation": "relu"}}


def network(in_shape: int | Sequence[int], out_dim: int | Sequence[int], trunk: str = "auto",
            hidden_sizes: Sequence[int] | None = None, activation: str | None = None, dueling: bool = False,
            conv_layers: Sequence[Sequence[int]] = NATURE_CONV_LAYERS) -> nn.Module:
    """The `network` config's factory, for inputs of size `in_shape` (an int) or uint8 images of shape
    (channels, height, width), which are scaled to [0, 1] inside the network.

    trunk=cnn puts the convolutional layers of Mnih et al. (2015) before the fully connected layers; trunk=auto
    picks cnn for images, mlp otherwise. The fully connected part is an `mlp`; with a tuple `out_dim`, one linear
    head per entry on shared hidden layers (an actor-critic with a shared trunk); with dueling=True, a dueling
    Q-network (algo.dueling of DQN). hidden_sizes and activation default to the trunk's: (64, 64) tanh for mlp, (512,) relu for cnn.
    """
    image = not isinstance(in_shape, int)
    if trunk == "auto":
        trunk = "cnn" if image else "mlp"
    if trunk not in TRUNK_DEFAULTS:
        raise ConfigError(f"network.trunk={trunk!r} is unknown; use mlp, cnn or auto")
    if trunk == "cnn" and not image:
        raise ConfigError("network=cnn needs image observations (a uint8 Box of channels x height x width); "
                          "this environment's are vectors: use network=mlp")
    hidden_sizes = TRUNK_DEFAULTS[trunk]["hidden_sizes"] if hidden_sizes is None else hidden_sizes
    activation = TRUNK_DEFAULTS[trunk]["activation"] if activation is None else activation
    if trunk == "cnn":
        features: nn.Module = ConvFeatures(tuple(in_shape), conv_layers)
        in_dim = features.out_dim
    else:
        features, in_dim = nn.Flatten(), int(np.prod(in_shape))
    if dueling and not isinstance(out_dim, int):
        raise ConfigError("a dueling network has one output head per action: it builds Q-networks only")
    if dueling:
        body: nn.Module = DuelingQNetwork(in_dim, out_dim, hidden_sizes, activation)
    elif isinstance(out_dim, int):
        body = mlp(in_dim, out_dim, hidden_sizes, activation)
    else:
        body = MultiHeadMLP(in_dim, out_dim, hidden_sizes, activation)
    return nn.Sequential(ScaleImage(), features, body) if image else body


class ScaleImage(nn.Module):
    """uint8 pixels -> floats in [0, 1] (images travel as uint8: a quarter of the bytes to copy to a GPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0


class ConvFeatures(nn.Sequential):
    """Convolutions with ReLU, each given as (out_channels, kernel, stride), then flattened
    (Mnih et al. 2015: 32 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1)."""

    def __init__(self, image_shape: tuple[int, ...], conv_layers: Sequence[Sequence[int]]):
        layers: list[nn.Module] = []
        channels = image_shape[0]
        for out_channels, kernel, stride in conv_layers:
            layers += [nn.Conv2d(channels, out_channels, kernel, stride), nn.ReLU()]
            channels = out_channels
        super().__init__(*layers, nn.Flatten())
        try:
            with torch.no_grad():
                self.out_dim = int(self(torch.zeros(1, *image_shape)).shape[1])
        except RuntimeError as error:
            raise ConfigError(f"images of shape {image_shape} are too small for network.conv_layers="
                              f"{[list(layer) for layer in conv_layers]}; give smaller kernels or strides") from error


class MultiHeadMLP(nn.Module):
    """Hidden layers shared by several linear output heads; returns one tensor per head."""

    def __init__(self, in_dim: int, out_dims: Sequence[int], hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        if not hidden_sizes:
            raise ConfigError("network.hidden_sizes=[] leaves no hidden layer to share between heads; give at least one")
        *trunk_sizes, width = hidden_sizes
        self.trunk = nn.Sequential(mlp(in_dim, width, trunk_sizes, activation), ACTIVATIONS[activation]())
        self.heads = nn.ModuleList(nn.Linear(width, out_dim) for out_dim in out_dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.trunk(x)
        return tuple(head(features) for head in self.heads)


class DuelingQNetwork(MultiHeadMLP):
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a'), a value and an advantage head on shared hidden layers
    (Wang et al. 2016, "Dueling Network Architectures for Deep Reinforcement Learning", eq. 9)."""

    def __init__(self, in_dim: int, num_actions: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__(in_dim, (1, num_actions), hidden_sizes, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, advantage = super().forward(x)
        return value + advantage - advantage.mean(-1, keepdim=True)


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `auto` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA GPU; use device=cpu or device=auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is unknown; use cpu, cuda or auto")
    return torch.device(name)


def is_image(space: gym.Space) -> bool:
    """A uint8 Box of 3 dimensions: channels x height x width, or height x width x (up to 4) channels."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


class ObservationEncoder:
    """Turns a batch of observations into the network's input tensor: Box is flattened to floats, Discrete is
    one-hot, images stay uint8 in channels-first order (the network scales them).

    `input_shape` is what the network factory gets: an int for flat inputs, (C, H, W) for images.
    """

    def __init__(self, space: gym.Space, device: torch.device):
        self.device = device
        self.num_states: int | None = None
        self.channels_last = False
        if isinstance(space, gym.spaces.Discrete):
            self.num_states = int(space.n)
            self.input_shape: int | tuple[int, ...] = self.num_states
        elif is_image(space):
            self.channels_last = space.shape[-1] <= 4 < space.shape[0]
            self.input_shape = (space.shape[2], *space.shape[:2]) if self.channels_last else tuple(space.shape)
        else:
            self.input_shape = int(np.prod(space.shape))

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(obs, device=self.device)
        if self.num_states is not None:
            return nn.functional.one_hot(x.long(), self.num_states).float()
        if isinstance(self.input_shape, tuple):
            return x.permute(0, 3, 1, 2) if self.channels_last else x
        return x.float().reshape(x.shape[0], self.input_shape)


SDE_VARIANCE_FLOOR = 1e-6


class StateDependentNoise(nn.Module):
    """gSDE, generalized state-dependent exploration (Raffin, Kober and Stulp 2021, "Smooth Exploration for Robotic
    Reinforcement Learning", as Stable-Baselines3 implements it): the exploration noise is a random linear map of a
    policy's last hidden features z(s) (taken without gradient by PPO and A2C, with it by SAC, as SB3),

        eps(s) = z(s) W,   W = sigma * E,  E_kj ~ N(0, 1),   sigma = exp(log sigma), a learned (features x actions) matrix

    so that for a given s, eps_j(s) ~ N(0, sigma_j(s)^2) with sigma_j(s)^2 = sum_k z_k(s)^2 sigma_kj^2 (+ 1e-6, as
    SB3). An E held for several steps pushes consecutive actions the same way instead of jittering them."""

    def __init__(self, features: int, actions: int, log_std_init: float):
        super().__init__()
        self.log_std = nn.Parameter(torch.full((features, actions), float(log_std_init)))

    def std(self, features: torch.Tensor) -> torch.Tensor:
        """sigma_j(s) per row and action dimension."""
        return (features.pow(2) @ self.log_std.exp().pow(2) + SDE_VARIANCE_FLOOR).sqrt()

    def noise(self, features: torch.Tensor, unit_noise: torch.Tensor) -> torch.Tensor:
        """eps(s) = z(s) (sigma * E) per row, for one E (features x actions) for every row or one E per row."""
        return (features.unsqueeze(-2) @ (self.log_std.exp() * unit_noise)).squeeze(-2)

    def draw(self, rows: int | None = None) -> torch.Tensor:
        """E of N(0, 1) entries: one (features x actions) matrix, or one per row."""
        shape = self.log_std.shape if rows is None else (rows, *self.log_std.shape)
        return torch.randn(shape, device=self.log_std.device)


class PolicyHead(nn.Module):
    """The action distribution of a stochastic policy from its network's output `out`: Categorical(logits=out)
    for Discrete actions, Normal(out, exp(log_std)) with a learned state-independent log-std for Box actions.
    With `sde_features` (Box actions under gSDE), `out` is the pair (mean, features z(s)) and the Gaussian is
    N(mean, sigma(s)^2) of a StateDependentNoise on those features; exploring actions then take the noise E of
    each env from the caller (rlrun.exploration.HeldNoise)."""

    def __init__(self, action_space: gym.Space, log_std_init: float = 0.0, sde_features: int | None = None):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.action_shape = () if self.discrete else tuple(action_space.shape)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(log_std_init)),
                                    requires_grad=not self.discrete and sde_features is None)
        self.sde = None if sde_features is None else StateDependentNoise(sde_features, self.action_dim, log_std_init)

    def mean_and_std(self, out: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sde is None:
            return out, self.log_std.exp()
        mean, features = out
        return mean, self.sde.std(features)

    def log_prob_and_entropy(self, out: Any, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) and H(pi(.|s)) per row (summed over the dimensions of a Box action)."""
        if self.discrete:  # log pi = log_softmax(logits): Categorical(logits)'s formulas in fewer operations
            log_pi = out.log_softmax(-1)
            return log_pi.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1), -(log_pi.exp() * log_pi).sum(-1)
        pi = torch.distributions.Normal(*self.mean_and_std(out), validate_args=False)
        return pi.log_prob(actions).sum(-1), pi.entropy().sum(-1)

    def act(self, out: Any, explore: bool, unit_noise: torch.Tensor | None = None) -> np.ndarray:
        """A sample (explore) or the mode of the distribution, as a numpy batch of actions; under gSDE the sample
        is mean + z(s) (sigma * E) with `unit_noise` E, one per row."""
        if self.discrete and explore:
            # Gumbel-max: argmax(logits - log E), E ~ Exp(1), is an exact sample of Categorical(logits), in fewer
            # operations than Categorical(logits).sample() (bench/README.md)
            action = (out - torch.empty_like(out).exponential_().log()).argmax(-1)
        elif self.discrete:
            action = out.argmax(-1)
        elif self.sde is not None:
            mean, features = out
            action = mean + self.sde.noise(features, unit_noise) if explore else mean
        else:
            action = out + self.log_std.exp() * torch.randn_like(out) if explore else out
        return action.cpu().numpy().reshape((len(action), *self.action_shape))


class ActorCritic(nn.Module):
    """A stochastic policy pi(a|s), a PolicyHead on a policy network's output, and a value network V(s), built by the
    `network` group's factory: two networks, or one whose hidden layers feed a policy head and a value head
    (shared_trunk). Its parameters include the head's log-std (learned for Box actions only). With
    state_dependent_noise (Box actions, two mlp networks), the policy's output is (mean, z(s)), its last hidden
    layer's features without gradient, for the head's gSDE."""

    def __init__(self, make_net: Callable[..., nn.Module], input_shape: int | tuple[int, ...], action_space: gym.Space,
                 shared_trunk: bool = False, log_std_init: float = 0.0, orthogonal_init: bool = True,
                 state_dependent_noise: bool = False):
        super().__init__()
        self.shared_trunk = shared_trunk
        self.state_dependent_noise = state_dependent_noise
        discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dim = int(action_space.n) if discrete else int(np.prod(action_space.shape))
        nets = ({"shared": make_net(input_shape, (action_dim, 1))} if shared_trunk else
                {"actor": make_net(input_shape, action_dim), "critic": make_net(input_shape, 1)})
        sde_features = sde_feature_width(nets.get("actor"), discrete) if state_dependent_noise else None
        self.head = PolicyHead(action_space, log_std_init, sde_features)
        for name, net in nets.items():
            setattr(self, name, net)
        if orthogonal_init:
            self.initialize_orthogonally()

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """The policy network's output (logits or Gaussian means; with gSDE the means and the features) and V(s)
        with shape (batch,), for encoded observations."""
        if self.shared_trunk:
            out, value = self.shared(x)
        else:
            out, value = self.policy(x), self.critic(x)
        return out, value.squeeze(-1)

    def policy(self, x: torch.Tensor) -> Any:
        if self.shared_trunk:
            return self.shared(x)[0]
        if self.state_dependent_noise:
            features = self.actor[:-1](x)
            return self.actor[-1](features), features.detach()
        return self.actor(x)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return (self.shared(x)[1] if self.shared_trunk else self.critic(x)).squeeze(-1)

    def act(self, x: torch.Tensor, explore: bool, unit_noise: torch.Tensor | None = None) -> np.ndarray:
        with torch.inference_mode():
            return self.head.act(self.policy(x), explore, unit_noise)

    def initialize_orthogonally(self) -> None:
        """Orthogonal weights with gain sqrt(2) in the hidden layers, 0.01 in the policy's output layer (a near-uniform
        first policy) and 1 in the value's, zero biases (Schulman et al.'s baselines, kept by Stable-Baselines3 and
        CleanRL; Huang et al. 2022, detail 2)."""
        for layer in weighted_layers(self):
            nn.init.orthogonal_(layer.weight, math.sqrt(2))
            nn.init.zeros_(layer.bias)
        if self.shared_trunk:  # the two heads are the last layers, policy first
            *_, policy_out, value_out = weighted_layers(self.shared)
        else:
            policy_out, value_out = weighted_layers(self.actor)[-1], weighted_layers(self.critic)[-1]
        nn.init.orthogonal_(policy_out.weight, 0.01)
        nn.init.orthogonal_(value_out.weight, 1.0)


def sde_feature_width(actor: nn.Module | None, discrete: bool) -> int:
    """The width of a policy network's last hidden layer, which gSDE reads; a ConfigError where there is none."""
    if discrete:
        raise ConfigError("algo.use_sde=true explores Box actions; this env's are Discrete: set algo.use_sde=false")
    if not (isinstance(actor, nn.Sequential) and isinstance(actor[-1], nn.Linear)):
        raise ConfigError("algo.use_sde=true reads the policy's last hidden layer, which needs a policy network of "
                          "its own from rlrun's mlp network (network=mlp, algo.shared_trunk=false)")
    return actor[-1].in_features


def weighted_layers(module: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    return [layer for layer in module.modules() if isinstance(layer, (nn.Linear, nn.Conv2d))]


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """`module`'s parameters take no gradient inside the block (an actor's loss through a critic it must not move)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def finite_bounds(algo_name: str, action_space: gym.spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    """The flat (low, high) of a Box action space; a ConfigError when a dimension is unbounded."""
    low, high = action_space.low.astype(np.float64).ravel(), action_space.high.astype(np.float64).ravel()
    unbounded = np.flatnonzero(~(np.isfinite(low) & np.isfinite(high)))
    if len(unbounded):
        raise ConfigError(f"algo={algo_name} needs finite action bounds to scale its tanh actor, but action dimensions "
                          f"{unbounded.tolist()} are unbounded; wrap the env in gymnasium.wrappers.RescaleAction")
    return low, high


def target_copy(target: nn.Module, source: nn.Module) -> nn.Module:
    """`target`, a module built like `source` (on its device), made a copy of it that takes no gradient: a target
    network, moved toward `source` by rlrun.returns.polyak_update."""
    target.to(next(source.parameters()).device).requires_grad_(False).load_state_dict(source.state_dict())
    return target


class BoundedActor(nn.Module):
    """mu(s) = c + h tanh(f(s)), with c = (high + low) / 2 and h = (high - low) / 2 per action dimension:
    deterministic actions inside the Box bounds, asymmetric ones too."""

    def __init__(self, net: nn.Module, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("center", ((high + low) / 2).float())
        self.register_buffer("half_range", ((high - low) / 2).float())

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        """c + h tanh(u)."""
        return self.center + self.half_range * torch.tanh(u)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.squash(self.net(obs))


class Critic(nn.Module):
    """Q(s, a) = net([s, a]), one value per row."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat((obs, action), -1)).squeeze(-1)


class TwinCritic(nn.Module):
    """Two critics Q_1, Q_2 with their own weights, trained on the same target; `min` is the clipped double-Q
    estimate of Fujimoto et al. (2018) that TD3 and SAC bootstrap from and SAC's actor climbs:

        Q(s, a) = min_i Q_i(s, a),   i = 1, 2
    """

    def __init__(self, make_net: Any, obs_dim: int, action_dim: int):
        super().__init__()
        self.q1 = Critic(make_net(obs_dim + action_dim, 1))
        self.q2 = Critic(make_net(obs_dim + action_dim, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(obs, action), self.q2(obs, action)

    def min(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.minimum(*self(obs, action))
