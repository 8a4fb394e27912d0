"""rlrun.tracking with the real libraries: W&B offline (its run folders read back) and a real MLflow server on
127.0.0.1 (read back through MlflowClient), each with a run interrupted and resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlrun.errors import ConfigError
from rlrun.tracking import start_tracker
from tracking_readers import wandb_curve, wandb_offline_runs

CONFIG = {"seed": 0, "total_steps": 700, "algo": {"lr": 0.001, "gamma": 0.99}, "env": {"id": "CartPole-v1"}}
WANDB = {"backend": "wandb", "project": "rlrun-test", "entity": None, "mode": "offline", "dir": None, "tags": ["test"],
         "rewind": False}
SUMMARY = {"env_steps": 700, "final_eval": {"mean_return": 7.0, "std_return": 0.5}, "algo": "reinforce"}

# the interrupted process: it logs steps 100..500 and dies without finishing its tracker. A W&B run writes its offline
# folder every 15 s and when it ends: this one ends as W&B ends a run that crashed (exit code 1), so that its
# folder holds what it logged (SIGKILLed at once, it would hold nothing).
INTERRUPTED = """\
import json, os, sys
from pathlib import Path
from rlrun.tracking import start_tracker
logger, config, run_dir, group = json.loads(sys.argv[1])
tracker = start_tracker(logger, config, Path(run_dir), group, None, None)
for step in range(100, 600, 100):
    tracker.log_scalars({"eval/mean_return": step / 100, "charts/SPS": 1000.0}, step)
if logger["backend"] == "wandb":
    tracker.run.finish(exit_code=1)
print("run_id", tracker.run_id, flush=True)
os._exit(1)
"""


def interrupted_run(logger: dict, run_dir: Path, group: str | None) -> str:
    # without this test process's W&B service (WANDB_SERVICE), which would hold the run after the process died
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    result = subprocess.run([sys.executable, "-c", INTERRUPTED, json.dumps([logger, CONFIG, str(run_dir), group])],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stderr
    return next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("run_id "))


def resumed_run(logger: dict, run_dir: Path, group: str | None, run_id: str) -> None:
    """Resumed from a checkpoint at step 300: it logs 400..700 again with other values, then finishes."""
    tracker = start_tracker(logger, CONFIG, run_dir, group, run_id, 300)
    assert tracker.run_id == run_id
    for step in range(400, 800, 100):
        tracker.log_scalars({"eval/mean_return": step / 10, "charts/SPS": 1000.0}, step)
    tracker.finish(SUMMARY)
    if logger["backend"] == "wandb":
        import wandb

        wandb.teardown()  # W&B writes the run's last records after finish() returns; teardown waits for them


def test_tensorboard_has_no_tracker_and_a_missing_backend_is_one_line(tmp_path):
    assert start_tracker({"backend": "tensorboard"}, CONFIG, tmp_path, None, None, None) is None
    with pytest.raises(ConfigError, match="logger.backend='neptune' is unknown"):
        start_tracker({"backend": "neptune"}, CONFIG, tmp_path, None, None, None)


def test_wandb_offline_run_resumed_from_a_checkpoint_with_rewind_is_one_curve(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = {**WANDB, "rewind": True}
    run_id = interrupted_run(logger, tmp_path, "dqn_cartpole")
    resumed_run(logger, tmp_path, "dqn_cartpole", run_id)
    first, second = wandb_offline_runs(tmp_path)
    assert first["run"].run_id == second["run"].run_id == run_id
    assert first["run"].run_group == "dqn_cartpole" and first["run"].project == "rlrun-test"
    config = {item.key: json.loads(item.value_json) for item in first["run"].config.update}
    assert config["algo"] == CONFIG["algo"] and config["env"] == CONFIG["env"]
    assert (second["run"].branch_point.run, second["run"].branch_point.value) == (run_id, 300)
    # the interrupted process's 400 and 500 are rewound; the resumed process's take their place
    assert wandb_curve(tmp_path, "eval/mean_return") == [(100, 1.0), (200, 2.0), (300, 3.0), (400, 40.0),
                                                         (500, 50.0), (600, 60.0), (700, 70.0)]
    assert json.loads(second["summary"]["final_eval"]) == SUMMARY["final_eval"]


def test_wandb_offline_run_resumed_without_rewind_continues_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_id = interrupted_run(WANDB, tmp_path, None)
    resumed_run(WANDB, tmp_path, None, run_id)
    first, second = wandb_offline_runs(tmp_path)
    assert first["run"].run_id == second["run"].run_id == run_id
    assert second["run"].resume and not second["run"].HasField("branch_point")
    assert sorted(second["history"]) == [400, 500, 600, 700]


def test_mlflow_run_resumed_from_a_checkpoint_is_one_curve_under_its_sweeps_parent(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    logger = {"backend": "mlflow", "tracking_uri": mlflow_uri, "experiment_name": "rlrun-test", "run_name": None}
    run_id = interrupted_run(logger, tmp_path / "a", "sweep-1")
    resumed_run(logger, tmp_path / "a", "sweep-1", run_id)
    other = start_tracker(logger, CONFIG, tmp_path / "b", "sweep-1", None, None)  # a second run of the sweep
    other.finish(SUMMARY)

    client = MlflowClient(tracking_uri=mlflow_uri)
    history = [(point.step, point.value) for point in client.get_metric_history(run_id, "eval/mean_return")]
    # the server keeps the interrupted process's 400 and 500; the resumed process adds 600 and 700
    assert sorted(history) == [(100, 1.0), (200, 2.0), (300, 3.0), (400, 4.0), (500, 5.0), (600, 60.0), (700, 70.0)]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["algo.lr"] == "0.001" and run.data.params["env.id"] == "CartPole-v1"
    assert run.data.metrics["summary/final_eval.mean_return"] == 7.0
    parent = run.data.tags["mlflow.parentRunId"]
    assert client.get_run(other.run_id).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).data.tags["rlrun.sweep"] == "sweep-1"
    assert json.loads(Path(client.download_artifacts(run_id, "summary.json", str(tmp_path))).read_text()) == SUMMARY


def test_a_missing_tracking_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"logger=mlflow needs the mlflow package: pip install 'rlrun\[mlflow\]'"):
        start_tracker({"backend": "mlflow"}, CONFIG, tmp_path, None, None, None)
