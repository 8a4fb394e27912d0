"""What a run shows and leaves behind, apart from checkpoints: TensorBoard scalars (means over each log interval),
the config and hparams, training steps per second, the progress bar, the log lines and summary.json; and the
same scalars and summary in a tracker (W&B, MLflow) where `logger=` names one.

Tags: `losses/<name>` for an agent's metric without a slash (others as they are), `charts/episodic_return`,
`charts/episodic_length`, `charts/SPS`, `eval/mean_return`, `eval/std_return`, and the diagnostics' own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rlrun.checkpoint import write_text
from rlrun.tracking import Tracker

log = logging.getLogger(__name__)

EVAL_METRIC = "eval/mean_return"


def tag_of(name: str) -> str:
    return name if "/" in name else f"losses/{name}"


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
        add(group, config[group])
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
                 tracker: Tracker | None = None):
        """`tracker` (rlrun.tracking: W&B or MLflow; the run builder may set it once a resume is accepted) gets every
        scalar TensorBoard gets and the summary."""
        self.run_dir = run_dir
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
                "tracked_run_id": None if self.tracker is None else self.tracker.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run: charts/SPS counts the steps and seconds before the resume too, and the interval's means
        go on from the checkpoint."""
        self.clock.seconds_before = state["train_seconds"]
        self.metrics = MetricMeans(**state["metric_sums"])

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
                yield self
        finally:
            self.writer.close()

    def write_run_description(self) -> None:
        config_yaml = OmegaConf.to_yaml(self.config)
        self.writer.add_text("config", "    " + config_yaml.replace("\n", "\n    "))
        for summary in hparams_summary(hparams_of(self.algo, self.config), {EVAL_METRIC: 0.0}):
            self.writer.file_writer.add_summary(summary)

    def add_metrics(self, metrics: dict[str, float]) -> None:
        self.metrics.add(metrics)

    def add_episodes(self, returns: np.ndarray, lengths: np.ndarray) -> None:
        self.metrics.add_many("charts/episodic_return", returns)
        self.metrics.add_many("charts/episodic_length", lengths)
        self.recent_returns.extend(returns.tolist())

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

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
        if self.tracker is not None:
            self.tracker.finish(summary)
        return summary
