"""The only environment loop in rlrun: act, step, hand the true s' to the agent, evaluate, and make sync points.

It knows nothing of any algorithm: agents follow `rlrun.core.Agent` and return their metrics from `observe`.
What a run records goes through a Recorder (rlrun.recording), its checkpoints through a Checkpointer
(rlrun.checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from rlrun.checkpoint import Checkpointer
from rlrun.core import Agent, Transition
from rlrun.envs import observation_statistics, reward_statistics, use_observation_statistics, use_reward_statistics
from rlrun.errors import TrainingDiverged
from rlrun.recording import Recorder, tag_of
from rlrun.returns import intervals_passed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerSettings:
    total_steps: int
    eval_every: int
    checkpoint_every: int
    log_every: int
    seed: int
    eval_epsilon: float = 0.0  # chance of a uniformly random action in evaluation


@dataclass
class Progress:
    """The trainer's own state, saved in every checkpoint."""

    env_steps: int = 0
    episodes: int = 0
    best_eval_return: float = -math.inf
    evaluations: list[dict[str, float]] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)


def true_next_obs(next_obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """s' for every env: the vector env already reset finished envs, their last obs is in info["final_obs"]."""
    if "_final_obs" not in info:
        return next_obs
    fixed = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        fixed[i] = info["final_obs"][i]
    return fixed


def evaluate(agent: Agent, eval_envs: gym.vector.VectorEnv, seed: int, epsilon: float = 0.0) -> np.ndarray:
    """One episode of the agent's deterministic policy in each eval env (run side by side), each action replaced
    by a uniformly random one with probability `epsilon`; returns the undiscounted returns."""
    obs, _ = eval_envs.reset(seed=seed)
    eval_envs.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    returns = np.zeros(eval_envs.num_envs)
    running = np.ones(eval_envs.num_envs, dtype=bool)
    while running.any():
        action = agent.act(obs, explore=False)
        if epsilon > 0:
            random = rng.random(eval_envs.num_envs) < epsilon
            action[random] = eval_envs.action_space.sample()[random]
        obs, reward, terminated, truncated, _ = eval_envs.step(action)
        returns += np.where(running, reward, 0.0)
        running &= ~(terminated | truncated)
    return returns


def derived_seed(seed: int, env_steps: int) -> int:
    """A seed for the envs reset at `env_steps`, the same in every run of this seed."""
    return int(np.random.SeedSequence([seed, env_steps]).generate_state(1)[0])


class Trainer:
    """Trains `agent` on `envs` for settings.total_steps env steps, evaluating it on `eval_envs`.

    `diagnose(agent)`, when given, runs at each evaluation; its metrics are recorded and the last ones go
    into summary.json. Each of `on_evaluation(env_steps, mean_return)` is called after every evaluation; an
    exception it raises stops training (a pruned search trial).

    Every interval checkpoint is a sync point: the running episodes end there as time-limit truncations
    (the agent bootstraps them) and the envs restart from seeds derived from (seed, step). A run resumed
    from that checkpoint restarts its envs the same way, so it goes on exactly as the uninterrupted run.
    """

    def __init__(self, agent: Agent, envs: gym.vector.VectorEnv, eval_envs: gym.vector.VectorEnv,
                 settings: TrainerSettings, checkpointer: Checkpointer, recorder: Recorder,
                 diagnose: Callable[[Agent], dict[str, float]] | None = None,
                 on_evaluation: Sequence[Callable[[int, float], None]] = ()):
        self.agent = agent
        self.envs = envs
        self.eval_envs = eval_envs
        self.settings = settings
        self.checkpointer = checkpointer
        self.recorder = recorder
        self.diagnose = diagnose
        self.on_evaluation = on_evaluation
        self.progress = Progress()

    def run(self, resume_from: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train from scratch or from a checkpoint's payload; return the summary also written to summary.json."""
        start = time.perf_counter()
        if resume_from is not None:
            self.restore(resume_from)
        with self.recorder.opened(self.progress.env_steps):
            try:
                self.train()
                if not self.progress.evaluations or self.progress.evaluations[-1]["step"] != self.progress.env_steps:
                    self.evaluate()
            except TrainingDiverged:
                raise
            except BaseException:
                with contextlib.suppress(OSError):  # a full disk: the error that stopped training is the one to show
                    self.checkpointer.save("interrupted.pt", self.checkpoint_parts())
                raise
            self.checkpointer.save("last.pt", self.checkpoint_parts())
            return self.recorder.write_summary(asdict(self.progress), self.eval_envs.num_envs,
                                               time.perf_counter() - start)

    def checkpoint_parts(self) -> dict[str, Any]:
        return {**asdict(self.progress), "recorder": self.recorder.state_dict(),
                "observation_statistics": observation_statistics(self.envs),
                "reward_statistics": reward_statistics(self.envs)}

    def restore(self, payload: dict[str, Any]) -> None:
        self.checkpointer.restore(payload)
        self.progress = Progress(**{name: payload[name] for name in Progress.__dataclass_fields__})
        self.recorder.load_state_dict(payload["recorder"])
        use_observation_statistics(self.envs, payload["observation_statistics"], freeze=False)
        use_reward_statistics(self.envs, payload.get("reward_statistics"))  # absent from checkpoints before it
        log.info("resuming at env step %d from %s", self.progress.env_steps, self.checkpointer.last_path)

    def train(self) -> None:
        settings, progress = self.settings, self.progress
        first_seed = settings.seed if progress.env_steps == 0 else derived_seed(settings.seed, progress.env_steps)
        obs, _ = self.envs.reset(seed=first_seed)
        self.recorder.clock.start()
        while progress.env_steps < settings.total_steps:
            action = self.agent.act(obs)
            next_obs, reward, terminated, truncated, info = self.envs.step(action)
            before, progress.env_steps = progress.env_steps, progress.env_steps + self.envs.num_envs
            self.check_env_output(reward, next_obs)
            # the last step needs no sync point: run() writes the final checkpoint after the final evaluation
            at_checkpoint = (intervals_passed(before, progress.env_steps, settings.checkpoint_every) > 0
                             and progress.env_steps < settings.total_steps)
            if at_checkpoint:
                truncated = truncated | ~terminated  # sync point: every running episode ends here
            metrics = self.agent.observe(Transition(obs, action, reward, true_next_obs(next_obs, info),
                                                    terminated, truncated))
            if metrics:
                self.check_finite(metrics)
                self.recorder.add_metrics(metrics)
            obs = next_obs
            if "_episode" in info:
                self.record_episodes(info)
            self.recorder.advance(self.envs.num_envs)
            if intervals_passed(before, progress.env_steps, settings.log_every):
                self.recorder.write_interval(progress.env_steps)
            if intervals_passed(before, progress.env_steps, settings.eval_every):
                self.evaluate()
            if at_checkpoint:
                obs, _ = self.envs.reset(seed=derived_seed(settings.seed, progress.env_steps))
                self.checkpointer.save_interval(self.checkpoint_parts())
        self.recorder.clock.stop()

    def check_env_output(self, reward: np.ndarray, obs: np.ndarray) -> None:
        """NaN or infinite rewards or observations come from the env, not from learning: say so."""
        for name, values in (("reward", reward), ("observation", obs)):
            bad = values[~np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values[:0]
            if bad.size:
                raise TrainingDiverged(f"the env returned a non-finite {name} ({bad.flat[0]}) at env step "
                                       f"{self.progress.env_steps}; training stopped and {self.checkpointer.last_good()}; "
                                       "fix the env (env.id, env.kwargs)")

    def check_finite(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if not math.isfinite(value):
                raise TrainingDiverged(f"{tag_of(name)} became {value} at env step {self.progress.env_steps}; "
                                       f"training stopped and {self.checkpointer.last_good()}; lower the learning "
                                       "rate or clip gradients (algo.max_grad_norm)")

    def record_episodes(self, info: dict[str, Any]) -> None:
        done = info["_episode"]
        self.recorder.add_episodes(info["episode"]["r"][done], info["episode"]["l"][done])
        self.progress.episodes += int(done.sum())

    def evaluate(self) -> None:
        progress = self.progress
        with self.recorder.clock.paused():
            use_observation_statistics(self.eval_envs, observation_statistics(self.envs))  # frozen training statistics
            returns = evaluate(self.agent, self.eval_envs, derived_seed(self.settings.seed, progress.env_steps),
                               self.settings.eval_epsilon)
            if self.diagnose is not None:
                progress.diagnostics = self.diagnose(self.agent)
            mean = float(returns.mean())
            progress.evaluations.append({"step": progress.env_steps, "mean_return": mean,
                                         "std_return": float(returns.std())})
            self.recorder.write_evaluation(progress.env_steps, returns, progress.diagnostics)
            if mean > progress.best_eval_return:
                progress.best_eval_return = mean
                self.checkpointer.save("best.pt", self.checkpoint_parts())
            for callback in self.on_evaluation:  # not training time: a video recorded here is not in charts/SPS
                callback(progress.env_steps, mean)
