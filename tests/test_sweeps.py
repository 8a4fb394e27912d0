"""Sweeps as a user runs them: multirun folders, the joblib, submitit and Optuna plugins, failures, requeues."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlrun.cli  # noqa: F401  (registers the path_safe resolver)
from conftest import RLRUN, read_summary, run_rlrun, stoppable
from rlrun.checks import packaged_configs
from rlrun.run import build_agent, check_config

TINY = ("total_steps=400", "eval.every=200", "eval.episodes=2", "checkpoint.every=200")


def job_dirs(sweep: Path) -> dict[str, Path]:
    return {path.parent.parent.name: path.parent.parent for path in sweep.glob("*/.hydra/config.yaml")}


def assert_complete(run_dir: Path) -> None:
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert read_summary(run_dir)["env_steps"] == 400


def test_joblib_sweep_runs_jobs_in_parallel_folders_with_hparams(tmp_path):
    result = run_rlrun("-m", "algo.lr=0.001,0.003", "seed=0,1", "hydra/launcher=joblib", "hydra.sweep.dir=sweep",
                       *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "leaked" not in result.stderr  # the idle workers rlrun stops at the end leave no semaphore behind
    jobs = job_dirs(tmp_path / "sweep")
    assert set(jobs) == {f"algo.lr={lr},seed={seed}"  # named by the swept keys alone
                         for lr in ("0.001", "0.003") for seed in (0, 1)}
    for run_dir in jobs.values():
        assert_complete(run_dir)
        assert set(TINY) <= set(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))  # the constants stay there
        events = EventAccumulator(str(run_dir))
        events.Reload()
        hparams = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        assert b"algo.lr" in hparams and b"CartPole-v1" in hparams and b"seed" in hparams
    assert {read_summary(run_dir)["seed"] for run_dir in jobs.values()} == {0, 1}

    report = subprocess.run([str(Path(RLRUN).parent / "rlrun-report"), "sweep"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "4 runs in 2 groups" in report.stdout
    rows = [line for line in report.stdout.splitlines() if line.startswith("CartPole-v1  algo.lr=")]
    assert len(rows) == 2 and all(" 0 1 " in row for row in rows), report.stdout
    assert (tmp_path / "sweep" / "report.png").stat().st_size > 10_000


def test_a_failing_job_is_recorded_and_the_other_jobs_run_to_the_end(tmp_path):
    # a bad value (a one-line config error) and a blow-up in training (lr=1e38 overflows), before the good job
    result = run_rlrun("-m", "algo.lr=-1,1e38,0.001", "hydra.sweep.dir=sweep", *TINY, cwd=tmp_path)
    assert result.returncode == 1
    assert "rlrun: error: algo.lr=-1 is invalid" in result.stderr
    jobs = {name.split(",")[0]: run_dir for name, run_dir in job_dirs(tmp_path / "sweep").items()}
    assert_complete(jobs["algo.lr=0.001"])
    assert "ConfigError: algo.lr=-1 is invalid" in (jobs["algo.lr=-1"] / "error.txt").read_text()
    assert "RuntimeError" in (jobs["algo.lr=1e+38"] / "error.txt").read_text()
    assert not (jobs["algo.lr=-1"] / "summary.json").exists() and not (jobs["algo.lr=1e+38"] / "summary.json").exists()


def optuna_trials(storage: Path, study: str) -> list:
    import optuna

    return optuna.load_study(study_name=study, storage=f"sqlite:///{storage}").trials


GAMMA_SEARCH = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
  - override /hydra/sweeper/sampler: random
hydra:
  sweeper:
    study_name: reinforce_cartpole
    direction: maximize
    max_failure_rate: 1.0
    sampler: {seed: 0}  # draws gamma=1.5 (out of range: the trial fails), then gamma=0.99
    params:
      algo.gamma: choice(0.99, 1.5)
"""


def test_optuna_search_continues_its_sqlite_study_and_survives_failed_trials(tmp_path):
    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}"
    first = run_rlrun("-m", "+sweep=reinforce_cartpole", storage, "hydra.sweeper.n_trials=3", "hydra.sweep.dir=first",
                      *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    trials = optuna_trials(tmp_path / "study.db", "reinforce_cartpole")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    # the objective is the mean final eval return of the trial's sweep.seeds_per_trial=2 seeds
    finals = [read_summary(tmp_path / "first" / "0" / f"seed={seed}")["final_eval"]["mean_return"] for seed in (0, 1)]
    assert trials[0].value == pytest.approx(sum(finals) / 2)

    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "gamma_search.yaml").write_text(GAMMA_SEARCH)
    second = run_rlrun("-m", "--config-dir", "conf", "+sweep=gamma_search", storage, "hydra.sweeper.n_trials=2",
                       "hydra.sweep.dir=second", *TINY, cwd=tmp_path)
    assert second.returncode == 2, second.stderr  # the search ran to its end; a trial's value was refused
    assert "rlrun: error: algo.gamma=1.5 is invalid" in second.stderr
    trials = optuna_trials(tmp_path / "study.db", "reinforce_cartpole")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"]
    jobs = {name.split(",")[1]: run_dir for name, run_dir in job_dirs(tmp_path / "second").items()}
    assert "algo.gamma=1.5 is invalid" in (jobs["algo.gamma=1.5"] / "error.txt").read_text()
    assert trials[4].value == read_summary(jobs["algo.gamma=0.99"])["final_eval"]["mean_return"]


def test_dqn_search_adds_trials_to_its_study_and_records_a_failed_trial(tmp_path):
    """The shipped DQN search at a tiny budget: 3 trials, then a second call on the same SQLite study that brings it
    to 5, with a gamma out of range in one of them (that trial fails; the other completes)."""
    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}"
    first = run_rlrun("-m", "+sweep=dqn_cartpole", storage, "hydra.sweeper.n_trials=3", "hydra.sweep.dir=first", *TINY,
                      cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert [t.state.name for t in optuna_trials(tmp_path / "study.db", "dqn_cartpole")] == ["COMPLETE"] * 3

    # torch_threads=0 is invalid: the random sampler with seed 1 draws it for one of the two new trials
    second = run_rlrun("-m", "+sweep=dqn_cartpole", storage, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=second",
                       "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=1", "torch_threads=choice(1,0)",
                       *TINY, cwd=tmp_path)
    assert second.returncode == 2, second.stderr  # the search went on; the refused trial's line is its answer
    trials = optuna_trials(tmp_path / "study.db", "dqn_cartpole")
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert {t.params["torch_threads"]: t.state.name for t in trials[3:]} == {0: "FAIL", 1: "COMPLETE"}
    for job in (tmp_path / "second").glob("[0-9]"):  # the job folders 0 and 1 of the second call
        number = OmegaConf.load(job / ".hydra" / "config.yaml").sweep.trial.number
        assert (job / "error.txt").exists() == (trials[number].state.name == "FAIL")
    assert "rlrun: error: torch_threads=0 is invalid" in second.stderr
    assert "Trial 3 failed (a user error, its line above)" in second.stdout + second.stderr


BAD_PARAMS = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
hydra:
  sweeper:
    params:
      algo.lr: choice(0.001, 0.003
"""


@pytest.mark.parametrize("args, message", [
    (["+sweep=reinforce_cartpole", "hydra/sweeper/pruner=median", "hydra.sweeper.storage=null"],
     "rlrun: error: hydra.sweeper.pruner needs hydra.sweeper.storage"),
    (["--config-dir", "conf", "+sweep=bad_params"], "rlrun: error: hydra.sweeper.params: algo.lr: choice(0.001, 0.003 is not Hydra's sweep syntax"),
], ids=["pruner without storage", "unparsable params"])
def test_a_search_config_mistake_is_one_line_with_exit_code_2(tmp_path, args, message):
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "bad_params.yaml").write_text(BAD_PARAMS)
    result = run_rlrun("-m", *args, "hydra.sweep.dir=sweep", *TINY, cwd=tmp_path)
    assert (result.returncode, result.stderr.splitlines()[-1][:len(message)]) == (2, message), result.stderr
    assert "Traceback" not in result.stderr


def test_other_choices_for_a_parameter_of_an_existing_study_are_one_line(tmp_path):
    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}"
    first = run_rlrun("-m", "+sweep=reinforce_cartpole", storage, "hydra.sweeper.n_trials=1", *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_rlrun("-m", "+sweep=reinforce_cartpole", storage, "hydra.sweeper.n_trials=1",
                       "algo.baseline=choice(mean)", *TINY, cwd=tmp_path)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.splitlines()[-1].startswith("rlrun: error: study reinforce_cartpole searches algo.baseline in ")
    assert [t.state.name for t in optuna_trials(tmp_path / "study.db", "reinforce_cartpole")] == ["COMPLETE"]
    assert second.stderr.splitlines()[-1].endswith("search other values in a new study (hydra.sweeper.study_name=...)")


def test_submitit_local_launcher_runs_each_job_as_a_process(tmp_path):
    result = run_rlrun("-m", "seed=0,1", "hydra/launcher=submitit_local", "hydra.sweep.dir=sweep", *TINY,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = job_dirs(tmp_path / "sweep")
    assert len(jobs) == 2
    for run_dir in jobs.values():
        assert_complete(run_dir)
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_preempted_submitit_job_is_requeued_and_resumes_in_its_own_folder(tmp_path):
    """SLURM's preemption/timeout signal (USR2), here sent to a submitit_local job: submitit requeues it with the
    same arguments, and it resumes from the last checkpoint in its own folder."""
    stopped = tmp_path / ".stopped"  # the job waits a few steps after its first checkpoint, until the signal
    sweep = subprocess.Popen([RLRUN, "-m", "seed=0", *stoppable("CartPole-v1"), "hydra/launcher=submitit_local",
                              "hydra.sweep.dir=sweep", "hydra.sweep.subdir=job", "total_steps=20000",
                              "eval.every=10000", "checkpoint.every=4000"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent),
                                  "RLRUN_TEST_STOP": "steps:1:10", "RLRUN_TEST_STOPPED": str(stopped)})
    job = tmp_path / "sweep" / "job"
    while not stopped.exists():
        assert sweep.poll() is None, sweep.stderr.read()
        time.sleep(0.2)
    (controller,) = [int(path.name) for path in (tmp_path / "sweep" / ".submitit").iterdir() if path.name.isdigit()]
    (task,) = children(controller)
    os.kill(task, signal.SIGUSR2)
    assert sweep.wait(timeout=240) == 0, sweep.stderr.read()
    assert len(list(job.glob("events.out.tfevents.*"))) == 2  # two attempts, one folder
    assert read_summary(job)["env_steps"] == 20000
    assert list(job_dirs(tmp_path / "sweep")) == [job.name]
    submitit_log = "".join(path.read_text() for path in (tmp_path / "sweep" / ".submitit").glob("*/*_log.*"))
    assert "Requeued job" in submitit_log
    assert "resuming at step" in submitit_log  # the second attempt's stdout


@pytest.mark.parametrize("path", packaged_configs("sweep"), ids=lambda path: path.stem)
def test_shipped_searches_name_real_hyperparameters_and_their_ranges_are_valid(path):
    algo = OmegaConf.load(path).defaults[0]["override /algo"]
    if not any(p.stem == algo for p in packaged_configs("algo")):
        pytest.skip(f"configs/algo/{algo}.yaml does not exist yet")
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        params = compose("config", [f"+sweep={path.stem}"], return_hydra_config=True).hydra.sweeper.params
        parser = OverridesParser.create()
        for end in (0, -1):  # every parameter at its low end, then at its high end
            overrides = []
            for key, space in params.items():
                override = parser.parse_override(f"{key}={space}")
                if override.is_interval_sweep():
                    overrides.append(f"{key}={[override.value().start, override.value().end][end]}")
                else:
                    overrides.append(f"{key}={list(override.sweep_string_iterator())[end]}")
            cfg = compose("config", [f"+sweep={path.stem}", *overrides])
            config = OmegaConf.to_container(cfg, resolve=True)
            check_config(config)
            # affordable trials: at most one gradient step per env step, whatever a tuned preset sets
            assert cfg.algo.get("gradient_steps", 1) <= cfg.algo.get("train_every", 1)
            assert (cfg.algo.get("update_epochs", 1) * cfg.algo.get("num_minibatches", 1)
                    <= cfg.algo.get("n_steps", 1) * cfg.env.num_envs)  # on-policy: steps per rollout
            env = gym.make(cfg.env.id)
            build_agent(config, env.observation_space, env.action_space)


def test_slurm_example_config_extends_the_submitit_slurm_launcher():
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        cfg = compose("config", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0



def test_early_solve_score_rewards_an_early_solve_that_lasts():
    from rlrun.run import early_solve_score

    def evaluations(*returns):
        return [{"step": 5000 * (i + 1), "mean_return": value} for i, value in enumerate(returns)]

    assert early_solve_score(evaluations(100, 480, 500, 500), 475, 20000) == pytest.approx(1.5)  # first solved at 10k of 20k
    assert early_solve_score(evaluations(100, 200, 300, 490), 475, 20000) == pytest.approx(1.0)   # at the end only
    assert early_solve_score(evaluations(100, 500, 500, 380), 475, 20000) == pytest.approx(0.8)   # solved, then lost
