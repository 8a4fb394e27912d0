"""Crash and resume through the CLI: SIGKILL after a checkpoint, `resume=`, and the same result as an
uninterrupted run; `rlrun-eval` on the saved agent; bad input answered in one line with nothing lost."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import RLRUN, assert_one_line_error, killed_at, read_summary, run_rlrun, snapshot, stoppable
from rlrun import checkpoint
from rlrun.checks import packaged_configs

RLRUN_EVAL = str(Path(sys.executable).parent / "rlrun-eval")
WITH_TEST_ENVS = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}

# Per algorithm: a deterministic config whose first checkpoint comes early; each run is killed a few steps after it.
RUNS = {
    "reinforce": [*stoppable("CartPole-v1"), "total_steps=8000", "checkpoint.every=2000", "eval.every=2000"],
    "qlearning": [*stoppable("FrozenLake-v1"), "total_steps=40000", "checkpoint.every=10000", "eval.every=10000"],
    "dqn": [*stoppable("CartPole-v1"), "total_steps=4000", "checkpoint.every=1000", "eval.every=1000",
            "algo.learning_starts=500"],
    "a2c": [*stoppable("CartPole-v1"), "total_steps=8000", "checkpoint.every=2000", "eval.every=2000"],
    # the preset's rollouts are 32 x 8 = 256 env steps: the checkpoints fall inside one
    "ppo": [*stoppable("CartPole-v1"), "total_steps=8000", "checkpoint.every=2000", "eval.every=2000"],
    "ddpg": [*stoppable("Pendulum-v1"), "total_steps=1600", "checkpoint.every=400", "eval.every=400",
             "algo.learning_starts=200"],
    "td3": [*stoppable("Pendulum-v1"), "total_steps=1600", "checkpoint.every=400", "eval.every=400",
            "algo.learning_starts=200"],
    "sac": [*stoppable("Pendulum-v1"), "total_steps=1600", "checkpoint.every=400", "eval.every=400",
            "algo.learning_starts=200"],
}
# SARSA shares Q-learning's tabular path (its own resume state is covered in test_tabular.py)
ALGOS = sorted(path.stem for path in packaged_configs("algo") if path.stem != "sarsa")
# settings with state of their own across a checkpoint (gSDE's noise, held across the first one): name -> (algorithm,
# its run's overrides)
VARIANTS = {
    "sac-gsde": ("sac", [*RUNS["sac"], "algo.use_sde=true", "algo.sde_sample_every=300"]),
    "a2c-normalized-rewards": ("a2c", [*RUNS["a2c"], "env.normalize_rewards=true"]),
    "ppo-gsde": ("ppo", [*stoppable("Pendulum-v1"), "total_steps=3000", "checkpoint.every=1000", "eval.every=1000",
                         "algo.use_sde=true", "algo.n_steps=64", "algo.num_minibatches=4", "algo.sde_sample_every=48"]),
}
SAME = ("env_steps", "episodes", "evaluations", "final_eval", "best_eval_return")


def run_arguments(name: str, run_dir: str) -> list[str]:
    algo, overrides = VARIANTS.get(name, (name, RUNS.get(name)))
    return [f"algo={algo}", *overrides, "seed=0", "progress=false", f"hydra.run.dir={run_dir}"]


def start(algo: str, run_dir: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([RLRUN, *run_arguments(algo, run_dir)], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=WITH_TEST_ENVS)


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


@pytest.mark.parametrize("algo", [*ALGOS, *VARIANTS])
def test_killed_run_resumes_to_the_same_result(tmp_path, algo):
    whole = start(algo, "whole", tmp_path)
    killed_at("steps:1:300", run_arguments(algo, "killed"), tmp_path)
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert whole.wait() == 0, whole.stderr.read()

    resumed = run_rlrun("resume=killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = read_summary(tmp_path / "whole"), read_summary(tmp_path / "killed")
    assert {key: got[key] for key in SAME} == {key: expected[key] for key in SAME}
    assert got.get("tabular") == expected.get("tabular")
    assert scalar_steps(tmp_path / "killed", "eval/mean_return") == scalar_steps(tmp_path / "whole", "eval/mean_return")
    sps_steps = scalar_steps(tmp_path / "killed", "charts/SPS")
    assert sps_steps == sorted(set(sps_steps)) == scalar_steps(tmp_path / "whole", "charts/SPS")

    with_video = algo == "reinforce"  # the video comes from the env's frames, whatever the algorithm
    evaluated = subprocess.run([RLRUN_EVAL, "killed", "episodes=3", f"video={str(with_video).lower()}"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300, env=WITH_TEST_ENVS)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "over 3 episodes" in evaluated.stdout
    if with_video:
        (video,) = (tmp_path / "killed" / "videos").glob("*.mp4")
        assert video.stat().st_size > 1000
        tags = EventAccumulator(str(tmp_path / "killed")).Reload().Tags()
        assert "eval/video" in tags["tensors"] + tags["images"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("finished")
    result = run_rlrun("total_steps=2000", "eval.every=1000", "checkpoint.every=1000", "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "run"


def copy_of(run: Path, destination: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, destination))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_checkpoint_from_before_an_env_option_resumes_while_the_option_is_off(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path / "run")
    for file in ("best.pt", "last.pt"):  # as an rlrun before env.normalize_rewards wrote them
        payload = checkpoint.load(run / "checkpoints" / file)
        del payload["config"]["env"]["normalize_rewards"], payload["config"]["env"]["normalize_rewards_gamma"]
        checkpoint.save(run / "checkpoints" / file, payload)
    before = snapshot(run)
    switched_on = run_rlrun("resume=run", "total_steps=3000", "env.normalize_rewards=true", cwd=tmp_path)
    assert_one_line_error(switched_on, "env.normalize_rewards=None, and this run sets env.normalize_rewards=True")
    assert snapshot(run) == before

    assert run_rlrun("run", command="rlrun-eval", cwd=tmp_path).returncode == 0
    resumed = run_rlrun("resume=run", "total_steps=3000", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert read_summary(run)["env_steps"] == 3000


@pytest.mark.parametrize("damage, message", [
    ("truncate", "cannot be read safely"),
    ("malicious", "cannot be read safely"),
    ("other algo", "was written by a run with algo._target_='rlrun.algos.reinforce.Reinforce', and this run sets "
                   "algo._target_='rlrun.algos.qlearning.QLearning', which a resume cannot change"),
])
def test_resume_refuses_a_bad_checkpoint_and_changes_nothing(finished_run, tmp_path, damage, message):
    run = copy_of(finished_run, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    extra = []
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "malicious":
        last.write_bytes(pickle.dumps({"agent": RunsCode()}, protocol=2))
    else:
        extra = ["algo=qlearning", "env=FrozenLake-v1"]
    before = snapshot(run)
    result = run_rlrun("resume=run", *extra, cwd=tmp_path)
    assert_one_line_error(result, message)
    after = snapshot(run)
    assert {name: data for name, data in after.items() if name != "rlrun.log"} == \
        {name: data for name, data in before.items() if name != "rlrun.log"}  # the log only grows
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("args, message", [
    (["resume=nowhere"], "resume=nowhere: there is no such folder"),
    (["resume=empty"], "resume=empty: the folder holds no checkpoints/last.pt to resume from"),
    (["hydra.run.dir=a_file/run"], "cannot write the run folder a_file/run"),
])
def test_resume_and_output_folder_errors(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    assert_one_line_error(run_rlrun(*args, cwd=tmp_path), message)


def test_a_diverging_loss_stops_with_one_line(tmp_path):
    # finite rewards whose returns overflow float32 (numpy's overflow warning silenced: one line only)
    result = run_rlrun("env=gym", "env.id=rlrun_test_envs:RlrunTest/Corridor-v0", "+env.kwargs.reward=1e38",
                       "+env.kwargs.disable_env_checker=true", "algo.episodes_per_update=1", "total_steps=200",
                       "hydra.run.dir=run", cwd=tmp_path, env={"PYTHONWARNINGS": "ignore"})
    assert_one_line_error(result, "losses/policy_loss became nan at env step 5; training stopped and no checkpoint "
                                  "was written before")
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "does not exist"),
    (lambda path: path.write_bytes(pickle.dumps({"agent": RunsCode()}, protocol=2)), "cannot be read safely"),
    (lambda path: __import__("torch").save({"weights": __import__("torch").zeros(2)}, path),
     "is not an rlrun checkpoint"),
])
def test_rlrun_eval_refuses_bad_checkpoints(tmp_path, make, message):
    make(tmp_path / "model.pt")
    result = subprocess.run([RLRUN_EVAL, "model.pt"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, message)
    assert not (tmp_path / "pwned.txt").exists()


def test_rlrun_eval_records_sarsa(tmp_path):
    """The algorithm left out of the kill test above: rlrun-eval and its video."""
    trained = run_rlrun("algo=sarsa", "env=CliffWalking-v1", "total_steps=4000", "eval.every=2000",
                        "hydra.run.dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    evaluated = subprocess.run([RLRUN_EVAL, "run", "episodes=2", "video=true"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    (video,) = (tmp_path / "run" / "videos").glob("*.mp4")
    assert video.stat().st_size > 1000
    assert (tmp_path / "run" / "eval.json").is_file()
