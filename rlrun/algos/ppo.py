"""PPO: proximal policy optimization with the clipped surrogate objective, over num_envs vector envs.

Sources: Schulman et al. (2017) "Proximal Policy Optimization Algorithms" (eq. 7, the clipped surrogate; eq. 9,
the combined loss); Schulman et al. (2016) "High-Dimensional Continuous Control Using Generalized Advantage
Estimation"; Huang et al. (2022) "The 37 Implementation Details of Proximal Policy Optimization" (ICLR blog
track), whose details (orthogonal init, Adam epsilon 1e-5, learning-rate annealing, GAE, shuffled minibatches,
per-minibatch advantage normalization, value clipping, global gradient clipping, approx_kl) are those below.

Every n_steps vector steps, the rollout s_t, a_t, r_t, s'_t (t = 0 .. n_steps-1, in every env) is scored once,
without gradients, by the policy that collected it, pi_old, and its critic V_old:

    delta_t = r_t + gamma (1 - terminated_t) V_old(s'_t) - V_old(s_t)
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1},   A_{n_steps} = 0,   done_t = terminated_t or truncated_t
    G_t     = A_t + V_old(s_t)                                                  (the value targets)

(rlrun.returns.gae) where s'_t is the true next observation: a time-limit truncation bootstraps from V of the
state it was cut at, a termination from nothing. Then update_epochs passes over the rollout, each in
num_minibatches shuffled minibatches of n_steps x num_envs / num_minibatches rows; on each minibatch, with the
probability ratio rho_t = pi(a_t|s_t) / pi_old(a_t|s_t) and A_t standardized over the minibatch
(normalize_advantages), one gradient step on

    L_clip  = -mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)                          eps = clip_range
    L_value = mean_t (V(s_t) - G_t)^2, or, with value_clip_range = c,
              mean_t max((V(s_t) - G_t)^2, (V_old(s_t) + clip(V(s_t) - V_old(s_t), -c, c) - G_t)^2)
    L       = L_clip + value_coef L_value - entropy_coef mean_t H(pi(.|s_t))

with Adam (or RMSprop), the global gradient norm clipped to max_grad_norm, and the learning rate decaying
linearly to 0 over the run with lr_schedule=linear (set once per update). (CleanRL writes the value loss as
0.5 mean_t (...)^2: its vf_coef c is value_coef c / 2 here; Stable-Baselines3 writes it as here.)

    approx_kl     = mean_t (rho_t - 1 - log rho_t)         an estimate of KL(pi_old || pi) that is never negative
    clip_fraction = mean_t [|rho_t - 1| > eps]

With target_kl set, the update stops at the first minibatch whose approx_kl (before its step) exceeds it.
Logged per update: the means over the minibatches it scored of policy_loss, value_loss, entropy, approx_kl and
clip_fraction, and explained_variance = 1 - Var(G - V_old) / Var(G) of the critic on the rollout.

Discrete actions follow a categorical policy, Box actions a Gaussian with a learned state-independent log-std
(the unclipped sample is the action whose probability is learned; the env clips it to the bounds). Images go
through the `network` group's CNN; shared_trunk=true shares it between actor and critic (CleanRL's ppo_atari.py).
With use_sde=true (Box actions) the Gaussian's noise is gSDE's (rlrun.networks.StateDependentNoise, as
Stable-Baselines3): a_t = m(s_t) + z(s_t) W with z the policy's last hidden features, each env's W held for
sde_sample_every env steps (default: the whole rollout), and pi(.|s) = N(m(s), sigma(s)^2) in rho_t and H.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from rlrun.buffers import Rollout
from rlrun.core import Agent, RunContext, Transition
from rlrun.errors import ConfigError
from rlrun.exploration import HeldNoise
from rlrun.networks import OPTIMIZERS, ActorCritic, ObservationEncoder, compile_if, gradient_step, make_optimizer
from rlrun.returns import gae
from rlrun.schedules import LR_SCHEDULES, LearningRateSchedule
from rlrun.validation import (BOOLEAN, NON_NEGATIVE, POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Rule, is_number, one_of,
                              optional)


class MinibatchLosses(NamedTuple):
    """The losses of one minibatch (the first three with their graphs) and its statistics."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_range: float) -> torch.Tensor:
    """L_clip = -mean min(rho A, clip(rho, 1 - eps, 1 + eps) A)."""
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    return -torch.min(ratio * advantages, clipped * advantages).mean()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor,
               clip_range: float | None) -> torch.Tensor:
    """mean (V - G)^2, or with a clip range c: mean max((V - G)^2, (V_old + clip(V - V_old, -c, c) - G)^2)."""
    loss = (values - targets).pow(2)
    if clip_range is not None:
        clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
        loss = torch.max(loss, (clipped - targets).pow(2))
    return loss.mean()


def explained_variance(predictions: np.ndarray, targets: np.ndarray) -> float | None:
    """1 - Var(targets - predictions) / Var(targets): 1 for a perfect critic, 0 for one that predicts the mean;
    None where the targets do not vary."""
    variance = float(np.var(targets))
    return None if variance == 0 else 1.0 - float(np.var(targets - predictions)) / variance


class PPO(Agent):
    observation_spaces = (gym.spaces.Box, gym.spaces.Discrete)
    action_spaces = (gym.spaces.Discrete, gym.spaces.Box)
    hyperparameter_rules = {
        "gamma": UNIT_INTERVAL, "gae_lambda": UNIT_INTERVAL, "n_steps": POSITIVE_INT, "update_epochs": POSITIVE_INT,
        "num_minibatches": POSITIVE_INT, "clip_range": POSITIVE, "value_clip_range": optional(POSITIVE),
        "normalize_advantages": BOOLEAN, "entropy_coef": NON_NEGATIVE, "value_coef": NON_NEGATIVE,
        "max_grad_norm": optional(POSITIVE), "target_kl": optional(POSITIVE), "lr": POSITIVE,
        "lr_schedule": one_of(LR_SCHEDULES), "optimizer": one_of(OPTIMIZERS), "optimizer_eps": POSITIVE,
        "shared_trunk": BOOLEAN, "log_std_init": Rule("a number", is_number), "orthogonal_init": BOOLEAN,
        "use_sde": BOOLEAN, "sde_sample_every": optional(POSITIVE_INT),
        "compile": BOOLEAN}

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, context: RunContext,
                 gamma: float = 0.99, gae_lambda: float = 0.95, n_steps: int = 2048, update_epochs: int = 10,
                 num_minibatches: int = 32, clip_range: float = 0.2, value_clip_range: float | None = None,
                 normalize_advantages: bool = True, entropy_coef: float = 0.0, value_coef: float = 0.5,
                 max_grad_norm: float | None = 0.5, target_kl: float | None = None, lr: float = 3e-4,
                 lr_schedule: str = "constant", optimizer: str = "adam", optimizer_eps: float = 1e-5,
                 shared_trunk: bool = False, log_std_init: float = 0.0, orthogonal_init: bool = True,
                 use_sde: bool = False, sde_sample_every: int | None = None,
                 compile: bool = False):
        self.device = context.device
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.update_epochs = update_epochs
        self.num_minibatches = num_minibatches
        self.clip_range = clip_range
        self.value_clip_range = value_clip_range
        self.normalize_advantages = normalize_advantages
        self.entropy_coef = entropy_coef
        self.value_coef = value_coef
        self.max_grad_norm = max_grad_norm
        self.target_kl = target_kl
        self.lr_schedule = LearningRateSchedule(lr_schedule, context.total_steps)
        self.env_steps = 0

        self.encode = ObservationEncoder(observation_space, self.device)
        self.actor_critic = ActorCritic(context.make_net, self.encode.input_shape, action_space, shared_trunk,
                                        log_std_init, orthogonal_init, use_sde).to(self.device)
        self.exploration = (HeldNoise(self.actor_critic.head.sde.draw, sde_sample_every, self.device) if use_sde
                            else None)
        self.optimizer = make_optimizer(optimizer, self.actor_critic.parameters(), lr, optimizer_eps)
        self.rollout = Rollout(n_steps)
        self.minibatch_losses = compile_if(compile, self.minibatch_losses)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        unit_noise = self.exploration(len(obs)) if explore and self.exploration is not None else None
        return self.actor_critic.act(self.encode(obs), explore, unit_noise)

    def observe(self, t: Transition) -> dict[str, float]:
        if self.env_steps == 0 and self.rollout.length * len(t.reward) < self.num_minibatches:
            raise ConfigError(f"algo.num_minibatches={self.num_minibatches} is more than the {self.rollout.length} x "
                              f"{len(t.reward)} rows of a rollout (algo.n_steps x env.num_envs); lower it")
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
        steps, num_envs = rollout.reward.shape
        batch = steps * num_envs
        obs_shape = rollout.obs.shape[2:]
        x = self.encode(rollout.obs.reshape(batch, *obs_shape))
        actions = torch.as_tensor(rollout.action.reshape(batch, *self.actor_critic.head.action_shape), device=self.device)
        with torch.no_grad():  # pi_old and V_old: constants of every minibatch loss
            out, old_values = self.actor_critic(x)
            old_log_prob, _ = self.actor_critic.head.log_prob_and_entropy(out, actions)
            next_values = self.actor_critic.value(self.encode(rollout.next_obs.reshape(batch, *obs_shape)))
        old_values_np = old_values.cpu().numpy().reshape(steps, num_envs)
        advantages_np = gae(rollout.reward, old_values_np, next_values.cpu().numpy().reshape(steps, num_envs),
                            rollout.terminated, rollout.truncated, self.gamma, self.gae_lambda)
        targets_np = advantages_np + old_values_np
        advantages = torch.as_tensor(advantages_np.reshape(-1), dtype=torch.float32, device=self.device)
        targets = torch.as_tensor(targets_np.reshape(-1), dtype=torch.float32, device=self.device)

        learning_rate = self.lr_schedule.apply(self.optimizer, self.env_steps)
        minibatches = (rows for _ in range(self.update_epochs)
                       for rows in torch.randperm(batch, device=self.device).tensor_split(self.num_minibatches))
        evaluated = []
        for rows in minibatches:
            losses = self.minibatch_losses(x[rows], actions[rows], old_log_prob[rows], old_values[rows],
                                           advantages[rows], targets[rows])
            evaluated.append(torch.stack([value.detach() for value in losses]))
            if self.target_kl is not None and losses.approx_kl.item() > self.target_kl:
                break
            self.step(losses)
        means = dict(zip(MinibatchLosses._fields, torch.stack(evaluated).mean(0).tolist()))  # one host sync
        means["charts/learning_rate"] = learning_rate
        explained = explained_variance(old_values_np, targets_np)
        if explained is not None:
            means["explained_variance"] = explained
        return means

    def minibatch_losses(self, x: torch.Tensor, actions: torch.Tensor, old_log_prob: torch.Tensor,
                         old_values: torch.Tensor, advantages: torch.Tensor,
                         targets: torch.Tensor) -> MinibatchLosses:
        out, values = self.actor_critic(x)
        log_prob, entropy = self.actor_critic.head.log_prob_and_entropy(out, actions)
        log_ratio = log_prob - old_log_prob
        ratio = log_ratio.exp()
        if self.normalize_advantages and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        with torch.no_grad():
            approx_kl = (ratio - 1.0 - log_ratio).mean()
            clip_fraction = ((ratio - 1.0).abs() > self.clip_range).float().mean()
        return MinibatchLosses(clipped_surrogate_loss(ratio, advantages, self.clip_range),
                               value_loss(values, old_values, targets, self.value_clip_range), entropy.mean(),
                               approx_kl, clip_fraction)

    def step(self, losses: MinibatchLosses) -> None:
        """One gradient step on L = L_clip + value_coef L_value - entropy_coef H."""
        loss = losses.policy_loss + self.value_coef * losses.value_loss
        if self.entropy_coef:  # otherwise no backward pass through the entropy
            loss = loss - self.entropy_coef * losses.entropy
        gradient_step(self.optimizer, loss, self.max_grad_norm)

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
