"""Optuna pruning: rlrun.pruning's evaluation reporter on a real SQLite study, and rlrun's sweeper recording a trial
that raises optuna.TrialPruned as PRUNED."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from rlrun.pruning import evaluation_reporter

MEDIAN = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}


def trial_config(study: optuna.Study, number: int, storage: str, seed: int = 0) -> dict:
    return {"seed": seed, "total_steps": 1000,
            "sweep": {"seeds_per_trial": 2, "trial": {"number": number, "study": study.study_name, "storage": storage}}}


@pytest.fixture
def study(tmp_path) -> tuple[optuna.Study, str]:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return optuna.create_study(study_name="search", storage=storage, direction="maximize"), storage


def test_no_reporter_outside_a_trial_or_without_a_pruner(study):
    study, storage = study
    assert evaluation_reporter({"seed": 0, "total_steps": 1000, "sweep": {"seeds_per_trial": 1}}) is None
    assert evaluation_reporter({"seed": 0, "total_steps": 1000, "sweep": {"seeds_per_trial": 1, "trial": None}}) is None
    trial = study.ask()  # the sweeper stores no pruner for NopPruner
    assert evaluation_reporter(trial_config(study, trial.number, storage)) is None


def test_a_trial_below_the_median_of_the_earlier_trials_is_pruned(study):
    study, storage = study
    good = study.ask()
    good.set_user_attr("pruner", MEDIAN)
    report = evaluation_reporter(trial_config(study, good.number, storage))
    for step, value in ((500, 50.0), (1000, 100.0)):
        report(step, value)  # the first trial: nothing to compare with, never pruned
    study.tell(good, 100.0)

    poor = study.ask()
    poor.set_user_attr("pruner", MEDIAN)
    report = evaluation_reporter(trial_config(study, poor.number, storage))
    report(500, 60.0)  # better than the first trial at step 500: it goes on
    with pytest.raises(optuna.TrialPruned):
        report(1000, 20.0)
    assert study.trials[poor.number].intermediate_values == {500: 60.0, 1000: 20.0}


def test_later_seeds_of_a_trial_report_after_the_first_seeds_steps(study):
    study, storage = study
    trial = study.ask()
    trial.set_user_attr("pruner", MEDIAN)
    for seed in (3, 4):  # seeds_per_trial=2 from seed=3
        report = evaluation_reporter(trial_config(study, trial.number, storage, seed=seed))
        report(500, float(seed))
        report(1000, float(seed))
    assert study.trials[trial.number].intermediate_values == {500: 3.0, 1000: 3.0, 1500: 4.0, 2000: 4.0}


APP = """\
import hydra
from omegaconf import OmegaConf

from rlrun.pruning import evaluation_reporter


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    report = evaluation_reporter(OmegaConf.to_container(cfg, resolve=True))
    for step in (100, 200):
        report(step, cfg.x)
    return cfg.x


main()
"""

CONFIG = """\
defaults:
  - override hydra/sweeper: optuna
  - override hydra/sweeper/sampler: random
  - _self_
x: 0
seed: 0
total_steps: 200
sweep:
  trial: null
hydra:
  sweep:
    dir: sweep
    subdir: ${hydra.job.num}
  sweeper:
    study_name: threshold
    storage: sqlite:///study.db
    direction: maximize
    n_trials: 6
    n_jobs: 1
    pruner:
      _target_: optuna.pruners.ThresholdPruner
      lower: 5
    params:
      x: choice(0, 10)
"""


def test_the_sweeper_records_a_trial_that_raises_trial_pruned_as_pruned(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    (tmp_path / "app.py").write_text(APP)
    result = subprocess.run([sys.executable, "app.py", "-m"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="threshold", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert len(trials) == 6 and {trial.params["x"] for trial in trials} == {0, 10}
    for trial in trials:  # ThresholdPruner(lower=5): x=0 stops at its first report, x=10 runs to the end
        if trial.params["x"] == 0:
            assert (trial.state.name, trial.intermediate_values) == ("PRUNED", {100: 0.0})
        else:
            assert (trial.state.name, trial.value, trial.intermediate_values) == ("COMPLETE", 10.0, {100: 10.0, 200: 10.0})
    assert Path(tmp_path / "sweep" / "optimization_results.yaml").is_file()
