"""Experiment tracking beside TensorBoard: Weights & Biases (`logger=wandb`) and MLflow (`logger=mlflow`).

A tracker gets the scalars TensorBoard gets, under the same tags, the run's resolved config and its final metrics;
the runs of one sweep share a W&B group, or an MLflow parent run. A resumed run continues its tracked run, whose id
the checkpoint keeps:
- W&B continues it (`resume="allow"`). Its steps only go up: online, the points the resumed process logs up to the
  last step the interrupted one logged are dropped, and those the interrupted process logged stay (rlrun's exact
  resume reproduces them). With logger.rewind=true, W&B's run rewind (`resume_from="<id>?_step=<step>"`, a preview
  feature an entity must have enabled) cuts the run back to the checkpoint's step instead and the resumed process
  logs the rest again; offline, the rewind is recorded in the new offline run folder and applied by `wandb sync`.
- MLflow keeps every metric point it is sent and cannot remove one, so the resumed tracker sends only the steps
  after the last one the server holds; the points in between are the interrupted process's, which rlrun's exact
  resume reproduces.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Protocol

from rlrun.errors import ConfigError

SWEEP_TAG = "rlrun.sweep"  # MLflow: the tag naming the sweep of a parent run
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag that nests a run under another in its UI


class Tracker(Protocol):
    run_id: str  # stored in checkpoints; handed back on resume

    def log_scalars(self, scalars: dict[str, float], step: int) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


def start_tracker(logger: dict[str, Any], config: dict[str, Any], run_dir: Path, group: str | None,
                  resume_id: str | None, resume_step: int | None) -> Tracker | None:
    """The tracker the `logger` config names; None for logger=tensorboard (TensorBoard is always written).
    config: the run's resolved config (logged as the run's config/params). group: the sweep's name (one W&B
    group / one MLflow parent run per sweep), None for a single run. resume_id/resume_step: a resumed run
    continues the same tracked run; steps logged after resume_step by the interrupted process must not
    leave a second, overlapping curve."""
    backend = logger["backend"]
    if backend == "tensorboard":
        return None
    if backend not in TRACKERS:
        raise ConfigError(f"logger.backend={backend!r} is unknown: it must be tensorboard, wandb or mlflow")
    if importlib.util.find_spec(backend) is None:
        raise ConfigError(f"logger={backend} needs the {backend} package: pip install 'rlrun[{backend}]'")
    return TRACKERS[backend](logger, config, run_dir, group, resume_id, resume_step)


class WandbTracker:
    def __init__(self, logger: dict[str, Any], config: dict[str, Any], run_dir: Path, group: str | None,
                 resume_id: str | None, resume_step: int | None) -> None:
        import wandb

        folder = Path(logger["dir"]) if logger.get("dir") else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        # reinit="create_new": the runs of a job (sweep.seeds_per_trial) and the jobs of an in-process sweep are
        # separate W&B runs, even when one of them ended with an exception before finish()
        self.run = wandb.init(project=logger["project"], entity=logger.get("entity"), mode=logger.get("mode"),
                              dir=str(folder), group=group, tags=logger.get("tags"), config=config,
                              reinit="create_new", **self.resumed(logger, resume_id, resume_step))
        self.run_id = self.run.id

    @staticmethod
    def resumed(logger: dict[str, Any], resume_id: str | None, resume_step: int | None) -> dict[str, str]:
        if resume_id is None:
            return {}
        if logger.get("rewind"):
            return {"resume_from": f"{resume_id}?_step={resume_step}"}
        return {"id": resume_id, "resume": "allow"}

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(summary)
        self.run.finish()


class MlflowTracker:
    def __init__(self, logger: dict[str, Any], config: dict[str, Any], run_dir: Path, group: str | None,
                 resume_id: str | None, resume_step: int | None) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=logger.get("tracking_uri"))
        if resume_id is not None:
            self.run_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            self.last_step = max((point.step for key in self.client.get_run(resume_id).data.metrics
                                  for point in self.client.get_metric_history(resume_id, key)), default=-1)
            return
        experiment = self.client.get_experiment_by_name(logger["experiment_name"])
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(logger["experiment_name"]))
        tags = {"rlrun.run_dir": str(run_dir)}
        if group is not None:
            tags[PARENT_TAG] = self.parent_run(experiment_id, group)
        self.run_id = self.client.create_run(experiment_id, tags=tags, run_name=logger.get("run_name")).info.run_id
        self.last_step = -1
        params = [Param(key, str(value)) for key, value in leaves(config)]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params in one batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def parent_run(self, experiment_id: str, group: str) -> str:
        """The sweep's parent run, made by the first of its runs. Runs that start at once may each make one; each
        then keeps the earliest and deletes its own, so all nest under the same."""
        query = f"tags.`{SWEEP_TAG}` = '{group}'"
        found = self.client.search_runs([experiment_id], filter_string=query)
        if not found:
            made = self.client.create_run(experiment_id, tags={SWEEP_TAG: group}, run_name=group).info.run_id
            self.client.set_terminated(made)  # a folder for the sweep's runs, with nothing to run itself
            found = self.client.search_runs([experiment_id], filter_string=query)
            for duplicate in sorted(found, key=lambda run: (run.info.start_time, run.info.run_id))[1:]:
                if duplicate.info.run_id == made:
                    self.client.delete_run(made)
        return min(found, key=lambda run: (run.info.start_time, run.info.run_id)).info.run_id

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if step <= self.last_step:
            return  # the server has this step from the interrupted process
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step)
                                                    for key, value in scalars.items()])

    def finish(self, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), summary.get("env_steps", 0)
        numbers = [Metric(f"summary/{key}", float(value), now, step) for key, value in leaves(summary)
                   if isinstance(value, (int, float)) and not isinstance(value, bool)]
        for start in range(0, len(numbers), 1000):  # MLflow takes at most 1000 metrics in one batch
            self.client.log_batch(self.run_id, metrics=numbers[start:start + 1000])
        self.client.log_dict(self.run_id, summary, "summary.json")
        self.client.set_terminated(self.run_id)


def leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every value of a nested dict that is not a dict: MLflow's flat params and metrics."""
    if not isinstance(node, dict):
        return [(path, node)]
    return [leaf for key, value in node.items() for leaf in leaves(value, f"{path}.{key}" if path else str(key))]


TRACKERS = {"wandb": WandbTracker, "mlflow": MlflowTracker}
