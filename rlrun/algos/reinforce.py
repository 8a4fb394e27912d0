"""REINFORCE: Monte-Carlo policy gradient over whole episodes, with an optional baseline.

Sources: Williams (1992); the seeds `001` (REINFORCE step by step) and `004` (REINFORCE with baseline).

For each finished episode s_0, a_0, r_0, ..., s_{T-1}, a_{T-1}, r_{T-1}, s_T the returns-to-go are

    R_t = sum_{k=0}^{T-1-t} gamma^k r_{t+k}          (R_{T-1} = r_{T-1})

and where the episode was cut by a time limit (truncated, not terminated) the tail is bootstrapped
from the learned value of the true last state, when there is one (baseline=value):

    R_t = sum_{k=0}^{T-1-t} gamma^k r_{t+k} + gamma^{T-t} V(s_T)

After `episodes_per_update` episodes, one gradient step on

    L_policy = -(1/E) sum_episodes sum_t log pi(a_t | s_t) (R_t - b(s_t))
    L_value  = mean_t (V(s_t) - R_t)^2                            (baseline=value only)
    L        = L_policy + L_value - entropy_coef (1/E) sum_episodes sum_t H(pi(. | s_t))

with b = 0 (none), the batch mean of R_t (mean), or V(s_t) held constant (value). With
normalize_returns the weights R_t - b(s_t) are standardized over the batch. With lr_schedule=linear
both learning rates decay linearly to 0 over total_steps env steps (a stable policy at the end of the budget).

On-policy with several envs: when the policy is updated, episodes still running in other envs
drop the steps they took under the old policy and continue with the suffix, whose actions and
returns-to-go all come from the new policy.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.core import Agent, RunContext, Transition
from rlrun.networks import ObservationEncoder, PolicyHead
from rlrun.returns import returns_to_go
from rlrun.schedules import LR_SCHEDULES, LearningRateSchedule
from rlrun.validation import BOOLEAN, NON_NEGATIVE, POSITIVE, POSITIVE_INT, UNIT_INTERVAL, one_of, optional

BASELINES = ("none", "mean", "value")


class Reinforce(Agent):
    observation_spaces = (gym.spaces.Box, gym.spaces.Discrete)
    action_spaces = (gym.spaces.Discrete, gym.spaces.Box)
    hyperparameter_rules = {"gamma": UNIT_INTERVAL, "lr": POSITIVE, "episodes_per_update": POSITIVE_INT,
                            "baseline": one_of(BASELINES), "value_lr": POSITIVE, "normalize_returns": BOOLEAN,
                            "entropy_coef": NON_NEGATIVE, "max_grad_norm": optional(POSITIVE),
                            "lr_schedule": one_of(LR_SCHEDULES)}

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, context: RunContext,
                 gamma: float = 0.99, lr: float = 1e-3, episodes_per_update: int = 4, baseline: str = "value",
                 value_lr: float = 1e-3, normalize_returns: bool = True, entropy_coef: float = 0.0,
                 max_grad_norm: float | None = None, lr_schedule: str = "constant"):
        self.device = context.device
        self.gamma = gamma
        self.episodes_per_update = episodes_per_update
        self.baseline = baseline
        self.normalize_returns = normalize_returns
        self.entropy_coef = entropy_coef
        self.max_grad_norm = max_grad_norm
        self.lr_schedule = LearningRateSchedule(lr_schedule, context.total_steps)
        self.env_steps = 0

        self.encode = ObservationEncoder(observation_space, self.device)
        self.head = PolicyHead(action_space).to(self.device)
        self.policy = context.make_net(self.encode.input_shape, self.head.action_dim).to(self.device)
        policy_params = list(self.policy.parameters()) + [p for p in self.head.parameters() if p.requires_grad]
        param_groups = [{"params": policy_params, "lr": lr}]
        self.value = context.make_net(self.encode.input_shape, 1).to(self.device) if baseline == "value" else None
        if self.value is not None:
            param_groups.append({"params": list(self.value.parameters()), "lr": value_lr})
        self.optimizer = torch.optim.Adam(param_groups)

        self.running: list[list[tuple[Any, Any, float]]] = []  # per env: (s_t, a_t, r_t) of the current episode
        self.finished: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (states, actions, R_t) per episode

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        with torch.inference_mode():
            return self.head.act(self.policy(self.encode(obs)), explore)

    def observe(self, t: Transition) -> dict[str, float]:
        if not self.running:
            self.running = [[] for _ in range(len(t.reward))]
        self.env_steps += len(t.reward)
        for i, steps in enumerate(self.running):
            steps.append((t.obs[i], t.action[i], float(t.reward[i])))
            if t.terminated[i] or t.truncated[i]:
                bootstrap_obs = t.next_obs[i] if t.truncated[i] and not t.terminated[i] else None
                self.finished.append(self.returns_to_go(steps, bootstrap_obs))
                self.running[i] = []
        if len(self.finished) < self.episodes_per_update:
            return {}
        metrics = self.update()
        self.finished = []
        self.running = [[] for _ in self.running]  # drop the steps taken under the old policy
        return metrics

    def returns_to_go(self, steps: list[tuple[Any, Any, float]], bootstrap_obs: Any | None):
        """(states, actions, R_t) of an episode: R_t from 0 after a termination or V(s_T) after a truncation."""
        bootstrap_value = 0.0
        if bootstrap_obs is not None and self.value is not None:
            with torch.inference_mode():
                bootstrap_value = float(self.value(self.encode(np.asarray(bootstrap_obs)[None])))
        states, actions, rewards = zip(*steps)
        return np.stack(states), np.stack(actions), returns_to_go(np.array(rewards), self.gamma, bootstrap_value)

    def update(self) -> dict[str, float]:
        num_episodes = len(self.finished)
        states, actions, returns = (np.concatenate(parts) for parts in zip(*self.finished))
        x = self.encode(states)
        returns_t = torch.as_tensor(returns, device=self.device)
        log_prob, entropy = self.head.log_prob_and_entropy(self.policy(x), torch.as_tensor(actions, device=self.device))

        if self.baseline == "value":
            values = self.value(x).squeeze(-1)
            baseline = values.detach()
            value_loss = (values - returns_t).pow(2).mean()
        else:
            baseline = returns_t.mean() if self.baseline == "mean" else torch.zeros_like(returns_t)
            value_loss = None
        weights = returns_t - baseline
        if self.normalize_returns and len(weights) > 1:
            weights = (weights - weights.mean()) / (weights.std() + 1e-8)

        policy_loss = -(log_prob * weights).sum() / num_episodes
        entropy_bonus = entropy.sum() / num_episodes
        loss = policy_loss - self.entropy_coef * entropy_bonus
        if value_loss is not None:
            loss = loss + value_loss

        learning_rate = self.lr_schedule.apply(self.optimizer, self.env_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups for p in group["params"]],
                                     self.max_grad_norm)
        self.optimizer.step()
        metrics = {"policy_loss": policy_loss.item(), "entropy": entropy.mean().item(),
                   "charts/learning_rate": learning_rate}
        if value_loss is not None:
            metrics["value_loss"] = value_loss.item()
        return metrics

    def state_dict(self) -> dict[str, Any]:
        # finished episodes waiting for the next update; the running ones are empty at a checkpoint (a sync point)
        finished = [tuple(torch.from_numpy(np.asarray(part)) for part in episode) for episode in self.finished]
        state = {"policy": self.policy.state_dict(), "head": self.head.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "env_steps": self.env_steps, "finished": finished}
        if self.value is not None:
            state["value"] = self.value.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.head.load_state_dict(state["head"])
        if self.value is not None:
            self.value.load_state_dict(state["value"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps = state["env_steps"]
        self.finished = [tuple(part.numpy() for part in episode) for episode in state["finished"]]
