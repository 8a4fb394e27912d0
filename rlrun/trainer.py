"""The only environment loop in rlrun: act, step, hand the true s' to the agent, log, evaluate, checkpoint.

It knows nothing of any algorithm: agents follow `rlrun.core.Agent` and return their metrics from
`observe`; the trainer owns TensorBoard, evaluation episodes, checkpoints and the progress bar.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rlrun import checkpoint
from rlrun.core import Agent, ConfigError, Transition
from rlrun.envs import observation_statistics, use_observation_statistics

log = logging.getLogger(__name__)

EVAL_METRIC = "eval/mean_return"
REPLAY_SAVE_LIMIT = 2**30  # bytes: larger replay buffers are saved only with checkpoint.save_replay=true


class TrainingDiverged(ConfigError):
    """A loss became NaN or infinite: training stops and the last good checkpoint stays as it was."""


@dataclass(frozen=True)
class TrainerSettings:
    total_steps: int
    eval_every: int
    checkpoint_every: int
    log_every: int
    seed: int
    algo: str
    progress: bool = True
    checkpoint_keep: int = 1  # interval checkpoints kept: last.pt, plus step_<N>.pt for the K - 1 before it
    save_replay: bool | None = None  # the agent's replay buffer in last.pt; None: when it is under 1 GiB
    eval_epsilon: float = 0.0  # chance of a uniformly random action in evaluation


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


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return after // every > before // every


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def derived_seed(seed: int, env_steps: int) -> int:
    """A seed for the envs reset at `env_steps`, the same in every run of this seed."""
    return int(np.random.SeedSequence([seed, env_steps]).generate_state(1)[0])


def hparams_of(algo: str, config: dict[str, Any]) -> dict[str, Any]:
    """The run's algo, env and network settings plus the seed, flattened for the HParams dashboard."""
    flat: dict[str, Any] = {"algo": algo, "seed": config["seed"], "total_steps": config["total_steps"]}

    def add(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not key.startswith("_"):
                    add(f"{prefix}.{key}", value)
        elif isinstance(node, (bool, int, float, str)):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    for group in ("algo", "env", "network"):
        add(group, {k: v for k, v in config[group].items() if k not in ("make_net", "device")})
    return flat


class MetricMeans:
    """Running means of the agent's metrics and the episode statistics between two TensorBoard writes."""

    def __init__(self, sums: dict[str, float] | None = None, counts: dict[str, int] | None = None) -> None:
        self.sums: dict[str, float] = dict(sums or {})
        self.counts: dict[str, int] = dict(counts or {})

    def add(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1

    def add_many(self, name: str, values: np.ndarray) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.counts[name] = self.counts.get(name, 0) + len(values)

    def pop(self) -> dict[str, float]:
        means = {name: total / self.counts[name] for name, total in self.sums.items()}
        self.sums.clear()
        self.counts.clear()
        return means


class Trainer:
    def __init__(self, agent: Agent, envs: gym.vector.VectorEnv, eval_envs: gym.vector.VectorEnv,
                 run_dir: str | Path, settings: TrainerSettings, config: dict[str, Any],
                 diagnose: Callable[[Agent], dict[str, float]] | None = None):
        """`diagnose(agent)`, when given, runs at each evaluation; its metrics are logged and the last
        ones go into summary.json (`group/name` tags become summary[group][name])."""
        self.agent = agent
        self.envs = envs
        self.eval_envs = eval_envs
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.config = config
        self.env_steps = 0
        self.episodes = 0
        self.best_eval_return = -math.inf
        self.evaluations: list[dict[str, float]] = []
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.metrics = MetricMeans()
        self.postfix: dict[str, str] = {}  # the progress bar's recent training return and last eval return
        self.train_seconds = 0.0
        self.diagnose = diagnose
        self.diagnostics: dict[str, float] = {}
        self.warned_replay = False

    def run(self, resume_from: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train for settings.total_steps env steps, from scratch or from a checkpoint's payload; return the
        summary also written to summary.json.

        Every interval checkpoint is a sync point: the running episodes end there as time-limit truncations
        (the agent bootstraps them) and the envs restart from seeds derived from (seed, step). A run resumed
        from that checkpoint restarts its envs the same way, so it goes on exactly as the uninterrupted run.
        """
        start = time.perf_counter()
        if resume_from is not None:
            self._restore(resume_from)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=self.env_steps + 1 if resume_from else None)
        try:
            if resume_from is None:
                self._write_run_description()
            # one bar per process: a thread lock, not tqdm's default multiprocess one (a named semaphore, which a
            # sweep's idle worker, stopped once the sweep is done, would leave behind)
            tqdm.set_lock(threading.RLock())
            with logging_redirect_tqdm(), tqdm(total=self.settings.total_steps, initial=self.env_steps, unit="step",
                                               dynamic_ncols=True,
                                               disable=None if self.settings.progress else True) as self.bar:
                self._train()
                if not self.evaluations or self.evaluations[-1]["step"] != self.env_steps:
                    self._evaluate()
            self._save_checkpoint("last.pt")
            summary = self._summary(time.perf_counter() - start)
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            return summary
        except TrainingDiverged:
            raise
        except BaseException:
            self._save_checkpoint("interrupted.pt")  # the latest weights, to evaluate; resume uses last.pt
            raise
        finally:
            self.writer.close()

    def _restore(self, payload: dict[str, Any]) -> None:
        self.agent.load_state_dict(payload["agent"])
        self.env_steps = payload["env_steps"]
        self.train_seconds = payload.get("train_seconds", 0.0)  # charts/SPS counts the steps before the resume too
        self.episodes = payload["episodes"]
        self.best_eval_return = payload["best_eval_return"]
        self.evaluations = payload["evaluations"]
        self.metrics = MetricMeans(**payload["metric_sums"])
        self.diagnostics = payload["diagnostics"]
        use_observation_statistics(self.envs, payload["observation_statistics"], freeze=False)
        restore_rng_state(payload["rng"])
        log.info("resuming at env step %d from %s", self.env_steps, self.run_dir / "checkpoints" / "last.pt")

    def _train(self) -> None:
        settings = self.settings
        if self.env_steps == 0:
            obs, _ = self.envs.reset(seed=settings.seed)
        else:
            obs, _ = self.envs.reset(seed=derived_seed(settings.seed, self.env_steps))
        lap = time.perf_counter()
        while self.env_steps < settings.total_steps:
            action = self.agent.act(obs)
            next_obs, reward, terminated, truncated, info = self.envs.step(action)
            before, self.env_steps = self.env_steps, self.env_steps + self.envs.num_envs
            # the last step needs no sync point: run() writes the final checkpoint after the final evaluation
            at_checkpoint = (crossed(before, self.env_steps, settings.checkpoint_every)
                             and self.env_steps < settings.total_steps)
            if at_checkpoint:
                truncated = truncated | ~terminated  # sync point: every running episode ends here
            transition = Transition(obs, action, reward, true_next_obs(next_obs, info), terminated, truncated)
            metrics = self.agent.observe(transition)
            if metrics:
                self._check_finite(metrics)
                self.metrics.add(metrics)
            obs = next_obs
            if "_episode" in info:
                self._record_episodes(info)
            self.bar.update(self.envs.num_envs)
            if crossed(before, self.env_steps, settings.log_every):
                self.train_seconds += time.perf_counter() - lap
                self._write_metrics()
                lap = time.perf_counter()
            if crossed(before, self.env_steps, settings.eval_every):
                self.train_seconds += time.perf_counter() - lap
                self._evaluate()
                lap = time.perf_counter()
            if at_checkpoint:
                obs, _ = self.envs.reset(seed=derived_seed(settings.seed, self.env_steps))
                self._save_interval_checkpoint()
        self.train_seconds += time.perf_counter() - lap

    def _check_finite(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if not math.isfinite(value):
                last = self.run_dir / "checkpoints" / "last.pt"
                kept = (f"the last good checkpoint is {last} (env step {checkpoint.load(last)['env_steps']})"
                        if last.exists() else "no checkpoint was written before")
                tag = name if "/" in name else f"losses/{name}"
                raise TrainingDiverged(f"{tag} became {value} at env step {self.env_steps}; training stopped and "
                                       f"{kept}; lower the learning rate or clip gradients (algo.max_grad_norm)")

    def _record_episodes(self, info: dict[str, Any]) -> None:
        done = info["_episode"]
        returns = info["episode"]["r"][done]
        self.metrics.add_many("charts/episodic_return", returns)
        self.metrics.add_many("charts/episodic_length", info["episode"]["l"][done])
        self.recent_returns.extend(returns.tolist())
        self.episodes += len(returns)

    def _write_metrics(self) -> None:
        """Means over the interval: one TensorBoard write per tag, since a write costs ~90 us."""
        for name, value in self.metrics.pop().items():
            self.writer.add_scalar(name if "/" in name else f"losses/{name}", value, self.env_steps)
        self.writer.add_scalar("charts/SPS", self.env_steps / max(self.train_seconds, 1e-9), self.env_steps)
        if self.recent_returns:
            self.postfix["ret"] = f"{np.mean(self.recent_returns):.1f}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def _evaluate(self) -> None:
        seed = derived_seed(self.settings.seed, self.env_steps)
        use_observation_statistics(self.eval_envs, observation_statistics(self.envs))  # frozen training statistics
        returns = evaluate(self.agent, self.eval_envs, seed, self.settings.eval_epsilon)
        mean, std = float(returns.mean()), float(returns.std())
        self.evaluations.append({"step": self.env_steps, "mean_return": mean, "std_return": std})
        self.writer.add_scalar(EVAL_METRIC, mean, self.env_steps)
        self.writer.add_scalar("eval/std_return", std, self.env_steps)
        log.info("step %d: eval return %.2f +- %.2f over %d episodes", self.env_steps, mean, std, len(returns))
        if self.diagnose is not None:
            self.diagnostics = self.diagnose(self.agent)
            for tag, value in self.diagnostics.items():
                self.writer.add_scalar(tag, value, self.env_steps)
        self.postfix["eval"] = f"{mean:.1f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        if mean > self.best_eval_return:
            self.best_eval_return = mean
            self._save_checkpoint("best.pt")

    def _save_interval_checkpoint(self) -> None:
        """last.pt, and with checkpoint_keep = K > 1 also step_<N>.pt (a hard link to it) for the last K - 1."""
        folder = self.run_dir / "checkpoints"
        self._save_checkpoint("last.pt")
        if self.settings.checkpoint_keep > 1:
            (folder / f"step_{self.env_steps}.pt").unlink(missing_ok=True)
            os.link(folder / "last.pt", folder / f"step_{self.env_steps}.pt")
            kept = sorted(folder.glob("step_*.pt"), key=lambda path: int(path.stem.split("_")[1]))
            for old in kept[:-(self.settings.checkpoint_keep - 1)]:
                old.unlink()

    def _agent_state(self, with_replay: bool) -> dict[str, Any]:
        """The agent's state, its replay buffer (key `replay_buffer`) left out unless wanted and allowed."""
        state = self.agent.state_dict()
        replay = state.pop("replay_buffer", None)
        if replay is None or not with_replay or self.settings.save_replay is False:
            return state
        size = sum(tensor.nbytes for tensor in replay["fields"].values())
        if self.settings.save_replay is None and size > REPLAY_SAVE_LIMIT:
            if not self.warned_replay:
                log.warning("warning: the replay buffer (%.1f GiB) is not saved in checkpoints: a resumed run starts "
                            "with an empty buffer; set checkpoint.save_replay=true to save it", size / 2**30)
                self.warned_replay = True
            return state
        return {**state, "replay_buffer": replay}

    def _save_checkpoint(self, name: str) -> None:
        checkpoint.save(self.run_dir / "checkpoints" / name, {
            "agent": self._agent_state(with_replay=name != "best.pt"),
            "env_steps": self.env_steps,
            "train_seconds": self.train_seconds,
            "episodes": self.episodes,
            "best_eval_return": self.best_eval_return,
            "evaluations": self.evaluations,
            "metric_sums": {"sums": self.metrics.sums, "counts": self.metrics.counts},
            "diagnostics": self.diagnostics,
            "rng": rng_state(),
            "observation_statistics": observation_statistics(self.envs),
            "config": self.config,
        })

    def _write_run_description(self) -> None:
        config_yaml = OmegaConf.to_yaml(self.config)
        self.writer.add_text("config", "    " + config_yaml.replace("\n", "\n    "))
        for summary in hparams_summary(hparams_of(self.settings.algo, self.config), {EVAL_METRIC: 0.0}):
            self.writer.file_writer.add_summary(summary)

    def _summary(self, wall_seconds: float) -> dict[str, Any]:
        final = self.evaluations[-1]
        diagnostics: dict[str, dict[str, float]] = {}
        for tag, value in self.diagnostics.items():
            group, name = tag.split("/", 1)
            diagnostics.setdefault(group, {})[name] = value
        return {
            "algo": self.settings.algo,
            "env": self.config["env"]["id"],
            "seed": self.settings.seed,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "wall_seconds": round(wall_seconds, 3),
            "steps_per_second": round(self.env_steps / max(self.train_seconds, 1e-9), 1),
            "final_eval": {"mean_return": final["mean_return"], "std_return": final["std_return"],
                           "episodes": self.eval_envs.num_envs},
            "best_eval_return": self.best_eval_return,
            "evaluations": self.evaluations,
            **diagnostics,
        }
