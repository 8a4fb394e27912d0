"""A seventh algorithm added as a user would: one module on PYTHONPATH (tests/external_algorithm/hill_climbing.py)
and one YAML in a --config-dir folder, nothing else. It has no discount and no replay buffer. It trains, resumes
exactly after a SIGKILL, runs in a sweep, and rlrun-eval evaluates its checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import killed_at, read_summary, run_rlrun, stoppable

USER_FOLDER = Path(__file__).parent / "external_algorithm"
AS_A_USER = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(USER_FOLDER)])}
RUN = ["--config-dir", str(USER_FOLDER), "algo=hill_climbing", "env=CartPole-v1", "total_steps=6000",
       "eval.every=2000", "checkpoint.every=2000", "seed=0", "progress=false"]
KILLABLE = [*RUN, *stoppable("CartPole-v1")]  # the same CartPole, where the test can kill the run at a known step
SAME = ("env_steps", "episodes", "evaluations", "final_eval", "best_eval_return")


def test_an_algorithm_from_outside_the_package_trains_and_resumes_exactly(tmp_path):
    whole = run_rlrun(*KILLABLE, "hydra.run.dir=whole", cwd=tmp_path, env=AS_A_USER)
    assert whole.returncode == 0, whole.stderr
    assert "hill_climbing on rlrun_test_envs:RlrunTest/StopsAtStep-v0 (no tuned preset), 6000 steps" in whole.stdout
    expected = read_summary(tmp_path / "whole")
    assert expected["final_eval"]["mean_return"] >= 475  # hill climbing solves CartPole in a few thousand steps

    killed_at("steps:1:300", [*KILLABLE, "hydra.run.dir=killed"], tmp_path, env=AS_A_USER)
    assert not (tmp_path / "killed" / "summary.json").exists()
    resumed = run_rlrun("--config-dir", str(USER_FOLDER), "resume=killed", cwd=tmp_path, env=AS_A_USER)
    assert resumed.returncode == 0, resumed.stderr
    got = read_summary(tmp_path / "killed")
    assert {key: got[key] for key in SAME} == {key: expected[key] for key in SAME}

    rlrun_eval = str(Path(sys.executable).parent / "rlrun-eval")
    evaluated = subprocess.run([rlrun_eval, "killed", "--config-dir", str(USER_FOLDER), "episodes=3"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120, env={**os.environ, **AS_A_USER})
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("rlrun-eval: 500.00 +- 0.00 over 3 episodes")


def test_an_algorithm_from_outside_the_package_runs_in_a_sweep_and_its_rules_hold(tmp_path):
    sweep = run_rlrun("-m", *RUN, "total_steps=2000", "algo.noise=0.1,0.5", "hydra.sweep.dir=sweep", cwd=tmp_path,
                      env=AS_A_USER)
    assert sweep.returncode == 0, sweep.stderr
    summaries = [read_summary(path.parent) for path in (tmp_path / "sweep").glob("*/summary.json")]
    assert len(summaries) == 2 and all(summary["algo"] == "hill_climbing" for summary in summaries)

    refused = run_rlrun(*RUN, "algo.noise=-1", "hydra.run.dir=refused", cwd=tmp_path, env=AS_A_USER)
    assert refused.returncode == 2
    assert refused.stderr == ("rlrun: error: algo.noise=-1 is invalid: it must be a positive number; fix it on the "
                              "command line (algo.noise=...)\n")
