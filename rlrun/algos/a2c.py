"""A2C: synchronous advantage actor-critic over num_envs vector envs, with GAE(lambda) advantages.

Sources: Mnih et al. (2016) "Asynchronous Methods for Deep Reinforcement Learning" (A2C is its
synchronous variant); Schulman et al. (2016) "High-Dimensional Continuous Control Using Generalized
Advantage Estimation"; the seed `004` (actor-critic with the one-step bootstrapped return).

Every n_steps vector steps the rollout s_t, a_t, r_t, s'_t (t = 0 .. n_steps-1, in every env) gives,
backwards in time (rlrun.returns.gae),

    delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1},        A_{n_steps} = 0

where s'_t is the true next observation (the final observation where an episode ended, so a
time-limit truncation bootstraps from V of the state it was cut at, and a termination from
nothing) and done_t = terminated_t or truncated_t keeps the sum inside one episode. lambda = 0
gives the one-step TD advantage delta_t of seed 004; lambda = 1 the discounted return to the end
of the episode or rollout (bootstrapped from V there) minus V(s_t). With value targets
G_t = A_t + V(s_t) (A_t and G_t held constant; with normalize_advantages the A_t of the policy loss
are standardized over the rollout), one gradient step on

    L = -mean_t log pi(a_t | s_t) A_t  +  value_coef mean_t (V(s_t) - G_t)^2  -  entropy_coef mean_t H(pi(. | s_t))

with RMSprop (as the paper) or Adam, the gradient norm clipped to max_grad_norm. The actor and the
critic share their hidden layers (shared_trunk=true) or are two networks. Discrete actions follow a
categorical policy, Box actions a Gaussian with a learned state-independent log-std, or with use_sde=true
gSDE's (rlrun.networks.StateDependentNoise, as Stable-Baselines3): a_t = m(s_t) + z(s_t) W with z the
policy's last hidden features, each env's W held for sde_sample_every env steps (default: the whole rollout),
and pi(.|s) = N(m(s), sigma(s)^2) in log pi and H.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.buffers import Rollout
from rlrun.core import Agent, RunContext, Transition
from rlrun.exploration import HeldNoise
from rlrun.networks import OPTIMIZERS, ActorCritic, ObservationEncoder, compile_if, gradient_step, make_optimizer
from rlrun.returns import gae
from rlrun.schedules import LR_SCHEDULES, LearningRateSchedule
from rlrun.validation import (BOOLEAN, NON_NEGATIVE, POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Rule, is_number, one_of,
                              optional)


class A2C(Agent):
    observation_spaces = (gym.spaces.Box, gym.spaces.Discrete)
    action_spaces = (gym.spaces.Discrete, gym.spaces.Box)
    hyperparameter_rules = {
        "gamma": UNIT_INTERVAL, "gae_lambda": UNIT_INTERVAL, "n_steps": POSITIVE_INT, "lr": POSITIVE,
        "optimizer": one_of(OPTIMIZERS), "optimizer_eps": POSITIVE, "value_coef": NON_NEGATIVE,
        "entropy_coef": NON_NEGATIVE, "max_grad_norm": optional(POSITIVE), "normalize_advantages": BOOLEAN,
        "shared_trunk": BOOLEAN, "log_std_init": Rule("a number", is_number), "orthogonal_init": BOOLEAN,
        "use_sde": BOOLEAN, "sde_sample_every": optional(POSITIVE_INT),
        "lr_schedule": one_of(LR_SCHEDULES), "compile": BOOLEAN}

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, context: RunContext,
                 gamma: float = 0.99, gae_lambda: float = 1.0, n_steps: int = 5, lr: float = 7e-4,
                 optimizer: str = "rmsprop", optimizer_eps: float = 1e-5, value_coef: float = 0.5,
                 entropy_coef: float = 0.0, max_grad_norm: float | None = 0.5, normalize_advantages: bool = False,
                 shared_trunk: bool = False, log_std_init: float = 0.0, orthogonal_init: bool = True,
                 use_sde: bool = False, sde_sample_every: int | None = None,
                 lr_schedule: str = "constant", compile: bool = False):
        self.device = context.device
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.max_grad_norm = max_grad_norm
        self.normalize_advantages = normalize_advantages
        self.lr_schedule = LearningRateSchedule(lr_schedule, context.total_steps)
        self.env_steps = 0

        self.encode = ObservationEncoder(observation_space, self.device)
        self.actor_critic = ActorCritic(context.make_net, self.encode.input_shape, action_space, shared_trunk,
                                        log_std_init, orthogonal_init, use_sde).to(self.device)
        self.exploration = (HeldNoise(self.actor_critic.head.sde.draw, sde_sample_every, self.device) if use_sde
                            else None)
        self.optimizer = make_optimizer(optimizer, self.actor_critic.parameters(), lr, optimizer_eps)
        self.rollout = Rollout(n_steps)
        self.loss = compile_if(compile, self.loss)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        unit_noise = self.exploration(len(obs)) if explore and self.exploration is not None else None
        return self.actor_critic.act(self.encode(obs), explore, unit_noise)

    def observe(self, t: Transition) -> dict[str, float]:
        before, self.env_steps = self.env_steps, self.env_steps + len(t.reward)
        if self.exploration is not None:
            self.exploration.advance(before, self.env_steps)
        if not self.rollout.append(t):
            return {}
        metrics = self.update()
        self.rollout.clear()
        if self.exploration is not None:
            self.exploration.rollout_ended()
        return metrics

    def update(self) -> dict[str, float]:
        rollout = self.rollout.stacked()
        batch = rollout.reward.size
        obs_shape = rollout.obs.shape[2:]

        def as_floats(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32, device=self.device)

        actions = torch.as_tensor(rollout.action.reshape(batch, *self.actor_critic.head.action_shape), device=self.device)
        loss, losses = self.loss(self.encode(rollout.obs.reshape(batch, *obs_shape)),
                                 self.encode(rollout.next_obs.reshape(batch, *obs_shape)), actions,
                                 as_floats(rollout.reward), as_floats(rollout.terminated), as_floats(rollout.truncated))
        learning_rate = self.lr_schedule.apply(self.optimizer, self.env_steps)
        gradient_step(self.optimizer, loss, self.max_grad_norm)
        return {**dict(zip(("policy_loss", "value_loss", "entropy"), losses.tolist())),  # one host sync
                "charts/learning_rate": learning_rate}

    def loss(self, x: torch.Tensor, next_x: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
             terminated: torch.Tensor, truncated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L of one rollout, from its encoded s_t and s'_t (rows t * num_envs + env) and its (steps, num_envs)
        rewards and episode ends; and the policy loss, value loss and entropy in one tensor, without graph."""
        out, values = self.actor_critic(x)
        with torch.no_grad():  # V(s'_t), A_t and G_t are constants of the loss: no graph, no policy pass over s'_t
            next_values = self.actor_critic.value(next_x)
            old_values = values.detach().view_as(rewards)
            advantages = gae(rewards, old_values, next_values.view_as(rewards), terminated, truncated, self.gamma,
                             self.gae_lambda)
            value_targets = (advantages + old_values).reshape(-1)
            advantages = advantages.reshape(-1)
        if self.normalize_advantages and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_prob, entropy = self.actor_critic.head.log_prob_and_entropy(out, actions)
        policy_loss = -(log_prob * advantages).mean()
        value_loss = nn.functional.mse_loss(values, value_targets)
        entropy = entropy.mean()
        loss = policy_loss + self.value_coef * value_loss
        if self.entropy_coef:  # otherwise no backward pass through the entropy
            loss = loss - self.entropy_coef * entropy
        return loss, torch.stack([policy_loss, value_loss, entropy]).detach()

    def state_dict(self) -> dict[str, Any]:
        return {"actor_critic": self.actor_critic.state_dict(), "optimizer": self.optimizer.state_dict(),
                "env_steps": self.env_steps, "rollout": self.rollout.state_dict(),
                "exploration": {} if self.exploration is None else self.exploration.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_critic.load_state_dict(state["actor_critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps = state["env_steps"]
        self.rollout.load_state_dict(state["rollout"])
        if self.exploration is not None:
            self.exploration.load_state_dict(state["exploration"])
