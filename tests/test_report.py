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


def write_run(folder: Path, lr: float, seed: int, returns: list[float] | None, job: Path | None = None,
              env: str = "CartPole-v1") -> None:
    """A run folder as rlrun writes it: .hydra/ in `job` (default: the folder), events, and summary.json
    unless `returns` is None (a run that never finished)."""
    job = job or folder
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    config = {"seed": seed, "total_steps": 3000, "env": {"id": env}, "algo": {"lr": lr, "seed": "${seed}"}}
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
    summary = {"algo": "dqn", "env": env, "seed": seed, "env_steps": 1000 * len(returns),
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


def svg_report(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """rlrun-report with --format svg (its text stays text) and the SVG it wrote."""
    result = subprocess.run([REPORT, str(folder), "--format", "svg", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result, (folder / "report.svg").read_text()


def test_a_sweep_with_one_evaluation_per_run_shows_its_points(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path / f"seed={seed}", 0.001, seed, [20.0 + seed])
    _, svg = svg_report(tmp_path)
    # a marker per evaluation: one mean point drawn as a marker, not an invisible one-point line
    assert svg.count("<use ") >= 1 and "range of 3 seeds" in svg
    assert "CartPole-v1" in svg and "solved: 475" in svg  # the panel's env and its threshold line


def test_two_seeds_get_the_range_label_and_a_note_that_more_seeds_are_needed(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"seed={seed}", 0.001, seed, [100, 200 + 100 * seed])
    result, svg = svg_report(tmp_path, "--threshold", "250")
    assert "range of 2 seeds" in svg and "95% CI" not in svg.split("band:")[0]
    assert "not a confidence interval" in result.stdout and "5 or more seeds" in result.stdout
    assert "solved: 250" in svg
    with (tmp_path / "report.csv").open() as file:
        (row,) = csv.DictReader(file)
    assert row["final_iqm_ci_low"] == ""  # no interval from 2 seeds


def test_five_seeds_get_rliable_s_interval_of_the_iqm(tmp_path):
    finals = [10.0, 20.0, 30.0, 40.0, 50.0]
    for seed, final in enumerate(finals):
        write_run(tmp_path / f"seed={seed}", 0.001, seed, [5.0, final])
    (row,) = report(tmp_path, image_format="pdf")
    assert row["final_iqm"] == pytest.approx(30.0)  # the middle half of 10 .. 50
    assert row["final_iqm_ci_low"] < 30.0 < row["final_iqm_ci_high"]
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")


def test_a_folder_of_several_envs_gets_a_panel_each_and_a_table_by_env(tmp_path):
    write_run(tmp_path / "a", 0.001, 0, [10, 300], env="CartPole-v1")
    write_run(tmp_path / "b", 0.01, 0, [10, 500], env="CartPole-v1")
    write_run(tmp_path / "c", 0.001, 0, [-1500, -300], env="Pendulum-v1")
    write_run(tmp_path / "d", 0.001, 0, [0.0, 1.0], env="FrozenLake-v1")
    result, svg = svg_report(tmp_path)
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.endswith(" 0") and "-v" in line]
    assert rows == ["CartPole-v1", "CartPole-v1", "FrozenLake-v1", "Pendulum-v1"]  # by env first
    titles = [title for title in ("CartPole-v1", "FrozenLake-v1", "Pendulum-v1") if f">{title}<" in svg]
    assert len(titles) == 3  # one panel (its title) per env
    only = subprocess.run([REPORT, str(tmp_path), "--env", "Pendulum-v1"], capture_output=True, text=True, timeout=120)
    assert only.returncode == 0 and "1 runs in 1 groups" in only.stdout
    wrong = subprocess.run([REPORT, str(tmp_path), "--env", "Nope-v0"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "the envs there are CartPole-v1, FrozenLake-v1, Pendulum-v1" in wrong.stderr
