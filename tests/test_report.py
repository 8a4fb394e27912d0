"""`rlrun-report`: groups by config across seeds, the table's figures, report.csv and report.png."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from conftest import RLRUN, read_summary
from rlrun.report import report

REPORT = str(Path(RLRUN).parent / "rlrun-report")


def write_run(folder: Path, lr: float, seed: int, returns: list[float] | None, job: Path | None = None) -> None:
    """A run folder as rlrun writes it: .hydra/ in `job` (default: the folder), events, and summary.json
    unless `returns` is None (a run that never finished)."""
    job = job or folder
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    config = {"seed": seed, "total_steps": 3000, "env": {"id": "CartPole-v1"}, "algo": {"lr": lr, "seed": "${seed}"}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"algo": "dqn"}}}}))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"algo.lr={lr}", f"seed={seed}", "total_steps=3000"]))
    folder.mkdir(parents=True, exist_ok=True)
    if returns is None:
        return
    start = time.time()
    writer = SummaryWriter(str(folder))
    for i, value in enumerate(returns):  # one evaluation every 1000 steps, 10 s apart
        writer.add_scalar("eval/mean_return", value, (i + 1) * 1000, walltime=start + 10 * (i + 1))
    writer.close()
    summary = {"algo": "dqn", "env": "CartPole-v1", "seed": seed, "env_steps": 1000 * len(returns),
               "steps_per_second": 100.0 * (seed + 1), "final_eval": {"mean_return": returns[-1], "std_return": 0.0}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_groups_runs_that_differ_only_in_seed(tmp_path):
    for seed, returns in enumerate([[100, 480, 490], [100, 200, 500], [50, 60, 70], [300, 475, 476]]):
        write_run(tmp_path / f"algo.lr=0.001,seed={seed}", 0.001, seed, returns)
    write_run(tmp_path / "algo.lr=0.01,seed=0", 0.01, 0, [10, 20, 30])
    failed = tmp_path / "algo.lr=0.01,seed=1"
    write_run(failed, 0.01, 1, None)
    (failed / "error.txt").write_text("Traceback (most recent call last):\nRuntimeError: loss is nan\n")
    write_run(tmp_path / "algo.lr=0.01,seed=2", 0.01, 2, None)  # killed: no summary.json, no error.txt

    rows = report(tmp_path)
    assert [row["config"] for row in rows] == ["algo.lr=0.001", "algo.lr=0.01"]  # best final return first
    best, other = rows
    assert best["seeds"] == "0 1 2 3" and best["failed"] == 0
    assert best["final_mean"] == pytest.approx((490 + 500 + 70 + 476) / 4)
    assert best["final_iqm"] == pytest.approx((476 + 490) / 2)  # the middle half of 70, 476, 490, 500
    assert best["threshold"] == 475  # CartPole-v1's reward_threshold
    assert best["solved"] == "3/4"
    assert best["steps_to_threshold"] == pytest.approx((2000 + 3000 + 2000) / 3)
    assert best["seconds_to_threshold"] == pytest.approx((20 + 30 + 20) / 3, abs=1.0)
    assert best["steps_per_second"] == pytest.approx(250.0)
    assert other["seeds"] == "0" and other["failed"] == 1 and other["unfinished"] == 1
    with (tmp_path / "report.csv").open() as file:
        assert [row["config"] for row in csv.DictReader(file)] == ["algo.lr=0.001", "algo.lr=0.01"]
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_seeds_run_inside_one_trial_form_one_group(tmp_path):
    trial = tmp_path / "0"
    for seed in (0, 1):
        write_run(trial / f"seed={seed}", 0.003, seed, [100, 500], job=trial)
    (row,) = report(tmp_path, threshold=400)
    assert row["seeds"] == "0 1" and row["solved"] == "2/2" and row["steps_to_threshold"] == 2000


def test_report_on_a_single_run_folder(reinforce_run):
    result = subprocess.run([REPORT, str(reinforce_run)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 runs in 1 groups" in result.stdout and "reinforce CartPole-v1" in result.stdout
    with (reinforce_run / "report.csv").open() as file:
        (row,) = csv.DictReader(file)
    evaluations = read_summary(reinforce_run)["evaluations"]
    assert float(row["final_mean"]) == evaluations[-1]["mean_return"]
    assert float(row["steps_to_threshold"]) == next(e["step"] for e in evaluations if e["mean_return"] >= 475)
    assert (reinforce_run / "report.png").is_file()


def test_metric_and_threshold_options(reinforce_run, tmp_path):
    out = tmp_path / "run"
    subprocess.run(["cp", "-r", str(reinforce_run), str(out)], check=True)
    result = subprocess.run([REPORT, str(out), "--metric", "charts/episodic_return", "--threshold", "100000"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "solved (charts/episodic_return)" in result.stdout and "0/1 (>= 100000.0)" in result.stdout
    missing = subprocess.run([REPORT, str(out), "--metric", "charts/nope"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no run under" in missing.stderr and "charts/nope" in missing.stderr
