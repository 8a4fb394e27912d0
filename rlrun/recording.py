"""What a run shows and leaves behind, apart from checkpoints: TensorBoard scalars (means over each log interval),
the config and hparams, training steps per second, the progress bar, the log lines and summary.json; and the
same scalars and summary in a tracker (W&B, MLflow) where `logger=` names one.

Tags: `losses/<name>` for an agent's metric without a slash (others as they are), `charts/episodic_return`,
`charts/episodic_length`, `charts/SPS`, `eval/mean_return`, `eval/std_return`, and the diagnostics' own; at the
end, the HParams dashboard's metrics `summary/*` (SUMMARY_METRICS).

HParams: each run writes only its own hparams values (a session start, hparams_pb of tensorboard.plugins.hparams.summary_v2, which the hparams api re-exports),
never an experiment config. TensorBoard then computes the dashboard's columns from the runs under its --logdir: the
union of their keys, each with its domain, `differs` set on the keys that vary (shown first). An experiment config
written by each run, or one per sweep, would be wrong wherever a logdir holds more than one: TensorBoard takes the
first it finds as the columns of every run (tensorboard/plugins/hparams/backend_context.py, _find_experiment_tag).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tensorboard.plugins.hparams import summary_v2 as hparams_summary  # api.py imports tensorflow (its Keras callback)
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rlrun.checkpoint import write_text
from rlrun.tracking import Tracker

log = logging.getLogger(__name__)

EVAL_METRIC = "eval/mean_return"
# the HParams dashboard's metrics, written once at the end of a run (the last value of a tag is its metric)
SUMMARY_METRICS = ("summary/final_eval_return", "summary/best_eval_return", "summary/steps_to_threshold",
                   "summary/seconds_to_threshold", "summary/steps_per_second")


def tag_of(name: str) -> str:
    return name if "/" in name else f"losses/{name}"


def hparams_of(algo: str, config: dict[str, Any]) -> dict[str, Any]:
    """The run's algo, env (its id as `env`), seed, budget, evaluation, and its algo, env and network settings,
    flattened for the HParams dashboard: lists as their text, null as `null`."""
    flat: dict[str, Any] = {"algo": algo, "env": config["env"]["id"], "seed": config["seed"],
                            "total_steps": config["total_steps"]}

    def add(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not key.startswith("_") and f"{prefix}.{key}" != "env.id":
                    add(f"{prefix}.{key}", value)
        elif node is None:
            flat[prefix] = "null"
        elif isinstance(node, (bool, int, float, str)):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    for group in ("algo", "env", "network", "eval"):
        add(group, config.get(group, {}))
    return flat


class MetricMeans:
    """Running means of the agent's metrics and the episode statistics between two writes."""

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


class Stopwatch:
    """Seconds of training: runs from start() to stop(), except inside paused()."""

    def __init__(self) -> None:
        self.seconds_before = 0.0  # from earlier laps (and, in a resumed run, from the run before)
        self.lap_start: float | None = None

    @property
    def seconds(self) -> float:
        lap = 0.0 if self.lap_start is None else time.perf_counter() - self.lap_start
        return self.seconds_before + lap

    def start(self) -> None:
        self.lap_start = time.perf_counter()

    def stop(self) -> None:
        self.seconds_before, self.lap_start = self.seconds, None

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self.lap_start is None:  # not running (the final evaluation, after training)
            yield
            return
        self.stop()
        try:
            yield
        finally:
            self.start()


class Recorder:
    """Records one run into `run_dir`, inside `opened()` (which closes the writer and the bar, also after an error)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], algo: str, total_steps: int, progress: bool = True,
                 tracker: Tracker | None = None, trial_id: str | None = None, solve_threshold: float | None = None,
                 log_every_seconds: float = 60.0):
        """`tracker` (rlrun.tracking: W&B or MLflow; the run builder may set it once a resume is accepted) gets every
        scalar TensorBoard gets and the summary. `trial_id` names the run in the HParams dashboard (default: its
        folder's name); `solve_threshold` is the eval return that solves the env (None: unknown), for the steps and
        seconds it took. When the progress bar is off (stderr not a terminal: SLURM, nohup), a log line every
        `log_every_seconds` gives the steps, steps/s and recent return."""
        self.run_dir = run_dir
        self.trial_id = trial_id or run_dir.name
        self.solve_threshold = solve_threshold
        self.solved_at: dict[str, float] | None = None  # env steps and training seconds of the first solve
        self.log_every_seconds = log_every_seconds
        self.next_log_line = 0.0
        self.tracker = tracker
        self.config = config
        self.algo = algo
        self.total_steps = total_steps
        self.progress = progress
        self.metrics = MetricMeans()
        self.clock = Stopwatch()
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.postfix: dict[str, str] = {}  # the progress bar's recent training return and last eval return

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.clock.seconds,
                "metric_sums": {"sums": self.metrics.sums, "counts": self.metrics.counts},
                "tracked_run_id": None if self.tracker is None else self.tracker.run_id,
                "solved_at": self.solved_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run: charts/SPS counts the steps and seconds before the resume too, and the interval's means
        go on from the checkpoint."""
        self.clock.seconds_before = state["train_seconds"]
        self.metrics = MetricMeans(**state["metric_sums"])
        self.solved_at = state.get("solved_at")  # checkpoints written before rlrun recorded it have none

    @contextmanager
    def opened(self, env_steps: int) -> Iterator[Recorder]:
        """The TensorBoard writer and the progress bar, from `env_steps` on (> 0: a resumed run, whose steps after
        the checkpoint, written by the run that was interrupted, are purged)."""
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=env_steps + 1 if env_steps else None)
        try:
            if env_steps == 0:
                self.write_run_description()
            # one bar per process: a thread lock, not tqdm's default multiprocess one (a named semaphore, which a
            # sweep's idle worker, stopped once the sweep is done, would leave behind)
            tqdm.set_lock(threading.RLock())
            with logging_redirect_tqdm(), tqdm(total=self.total_steps, initial=env_steps, unit="step",
                                               dynamic_ncols=True, disable=None if self.progress else True) as self.bar:
                self.env_steps, self.next_log_line = env_steps, time.monotonic() + self.log_every_seconds
                yield self
        finally:
            self.writer.close()

    def write_run_description(self) -> None:
        config_yaml = OmegaConf.to_yaml(self.config)
        self.writer.add_text("config", "    " + config_yaml.replace("\n", "\n    "))
        self.writer.file_writer.add_summary(hparams_summary.hparams_pb(hparams_of(self.algo, self.config),
                                                                   trial_id=self.trial_id))

    def add_metrics(self, metrics: dict[str, float]) -> None:
        self.metrics.add(metrics)

    def add_episodes(self, returns: np.ndarray, lengths: np.ndarray) -> None:
        self.metrics.add_many("charts/episodic_return", returns)
        self.metrics.add_many("charts/episodic_length", lengths)
        self.recent_returns.extend(returns.tolist())

    def advance(self, steps: int) -> None:
        self.bar.update(steps)
        self.env_steps += steps
        if self.bar.disable and time.monotonic() >= self.next_log_line:
            self.next_log_line = time.monotonic() + self.log_every_seconds
            recent = f", recent return {np.mean(self.recent_returns):.1f}" if self.recent_returns else ""
            log.info("step %d/%d, %.0f steps/s%s", self.env_steps, self.total_steps,
                     self.steps_per_second(self.env_steps), recent)

    def steps_per_second(self, env_steps: int) -> float:
        return env_steps / max(self.clock.seconds, 1e-9)

    def write_scalars(self, scalars: dict[str, float], env_steps: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, env_steps)
        if self.tracker is not None:
            self.tracker.log_scalars(scalars, env_steps)

    def write_interval(self, env_steps: int) -> None:
        """The means over the interval, one write per tag, and charts/SPS."""
        scalars = {tag_of(name): value for name, value in self.metrics.pop().items()}
        self.write_scalars({**scalars, "charts/SPS": self.steps_per_second(env_steps)}, env_steps)
        if self.recent_returns:
            self.postfix["ret"] = f"{np.mean(self.recent_returns):.1f}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def write_evaluation(self, env_steps: int, returns: np.ndarray, diagnostics: dict[str, float]) -> None:
        mean, std = float(returns.mean()), float(returns.std())
        self.write_scalars({EVAL_METRIC: mean, "eval/std_return": std, **diagnostics}, env_steps)
        log.info("step %d: eval return %.2f +- %.2f over %d episodes", env_steps, mean, std, len(returns))
        if self.solved_at is None and self.solve_threshold is not None and mean >= self.solve_threshold:
            self.solved_at = {"env_steps": env_steps, "train_seconds": self.clock.seconds}
        self.postfix["eval"] = f"{mean:.1f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def write_summary(self, progress: dict[str, Any], eval_episodes: int, wall_seconds: float) -> dict[str, Any]:
        """summary.json: the final and best evaluations, every evaluation, the budget and speed, and the last
        diagnostics (`group/name` tags become summary[group][name]); returns it."""
        final = progress["evaluations"][-1]
        diagnostics: dict[str, dict[str, float]] = {}
        for tag, value in progress["diagnostics"].items():
            group, name = tag.split("/", 1)
            diagnostics.setdefault(group, {})[name] = value
        summary = {
            "algo": self.algo,
            "env": self.config["env"]["id"],
            "seed": self.config["seed"],
            "env_steps": progress["env_steps"],
            "episodes": progress["episodes"],
            "wall_seconds": round(wall_seconds, 3),
            "steps_per_second": round(self.steps_per_second(progress["env_steps"]), 1),
            "final_eval": {"mean_return": final["mean_return"], "std_return": final["std_return"],
                           "episodes": eval_episodes},
            "best_eval_return": progress["best_eval_return"],
            "evaluations": progress["evaluations"],
            **diagnostics,
        }
        write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.write_hparams_metrics(summary)
        if self.tracker is not None:
            self.tracker.finish(summary)
        return summary

    def write_hparams_metrics(self, summary: dict[str, Any]) -> None:
        """The HParams dashboard's metrics (SUMMARY_METRICS), at the run's last step; the steps and training seconds
        to the solve threshold are NaN where the run never reached it (or the env has none), so that their columns
        are there for every sweep."""
        solved = self.solved_at or {"env_steps": math.nan, "train_seconds": math.nan}
        metrics = {"summary/final_eval_return": summary["final_eval"]["mean_return"],
                   "summary/best_eval_return": summary["best_eval_return"],
                   "summary/steps_to_threshold": solved["env_steps"],
                   "summary/seconds_to_threshold": solved["train_seconds"],
                   "summary/steps_per_second": summary["steps_per_second"]}
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, summary["env_steps"])
