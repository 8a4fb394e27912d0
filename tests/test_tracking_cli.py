"""logger=wandb and logger=mlflow through the CLI: a run killed after a checkpoint and resumed is one curve in the
offline W&B folder and in a real MLflow server, with the steps TensorBoard shows. Passes once the recorder starts
rlrun.tracking's tracker (its run_id kept in the checkpoint and handed back on resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import RLRUN, run_rlrun
from tracking_readers import wandb_curve, wandb_offline_runs

RUN = ["algo=reinforce", "env=CartPole-v1", "total_steps=8000", "checkpoint.every=2000", "eval.every=2000", "seed=0",
       "progress=false", "hydra.run.dir=killed"]


def tensorboard_curve(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def assert_same_curve(tracked: list[tuple[int, float]], tensorboard: list[tuple[int, float]]) -> None:
    """The same steps, once each, and the same values (TensorBoard keeps them as 32-bit floats)."""
    assert [step for step, _ in tracked] == [step for step, _ in tensorboard]
    assert [value for _, value in tracked] == pytest.approx([value for _, value in tensorboard], rel=1e-6)


def killed_after_a_checkpoint(args: list[str], cwd: Path, env: dict[str, str], tracked) -> None:
    """Start rlrun, SIGKILL it once it has written a checkpoint and `tracked()` says its tracker holds that step."""
    process = subprocess.Popen([RLRUN, *args], cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    last = cwd / "killed" / "checkpoints" / "last.pt"
    while not (last.exists() and tracked()):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_killed_and_resumed_run_is_one_curve_in_wandb(tmp_path):
    # offline, and the offline folder written every 0.1 s rather than every 15 s, so that the kill leaves it there
    env = {"WANDB_MODE": "offline", "WANDB__TRANSACTION_LOG_FLUSH_INTERVAL": "0.1"}
    folder = tmp_path / "killed"

    def tracked() -> bool:
        runs = wandb_offline_runs(folder) if (folder / "wandb").is_dir() else []
        return bool(runs) and any(step >= 2000 for step in runs[0]["history"])

    # rewind: the offline folders then hold each step once (without it, the second one repeats the steps between
    # the checkpoint and the kill, and W&B's step order settles them as they are synced)
    killed_after_a_checkpoint([*RUN, "logger=wandb", "logger.rewind=true"], tmp_path, env, tracked)
    resumed = run_rlrun("resume=killed", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    first, second = wandb_offline_runs(folder)
    assert first["run"].run_id == second["run"].run_id
    assert second["run"].branch_point.value % 2000 == 0  # rewound to the checkpoint it resumed from
    for tag in ("eval/mean_return", "charts/episodic_return"):
        assert_same_curve(wandb_curve(folder, tag), tensorboard_curve(folder, tag))


def test_a_killed_and_resumed_run_is_one_curve_in_mlflow(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    logger = ["logger=mlflow", f"logger.tracking_uri={mlflow_uri}", "logger.experiment_name=killed"]
    killed_after_a_checkpoint([*RUN, *logger], tmp_path, {}, lambda: True)  # MLflow logs synchronously
    resumed = run_rlrun("resume=killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (run,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert run.info.status == "FINISHED"
    for tag in ("eval/mean_return", "charts/episodic_return"):
        history = sorted((point.step, point.value) for point in client.get_metric_history(run.info.run_id, tag))
        assert_same_curve(history, tensorboard_curve(tmp_path / "killed", tag))
