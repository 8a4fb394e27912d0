"""The contract of a run as a hostile but realistic user tests it (issue 21): a checkpoint is data, a resume applies
or refuses what it is told, one run per folder, and every bad input is one line, exit code 2, with nothing already
written changed. Each numbered case of the issue is a test here (or, where noted, in the file that covers it)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RLRUN, assert_one_line_error, killed_at, read_summary, run_rlrun, snapshot, stoppable
from rlrun import checkpoint

TINY = ["total_steps=300", "eval.every=100", "checkpoint.every=100", "eval.episodes=2", "progress=false"]
SAME = ("env_steps", "episodes", "evaluations", "final_eval", "best_eval_return")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 300-step REINFORCE run on CartPole, to copy."""
    workdir = tmp_path_factory.mktemp("finished")
    result = run_rlrun(*TINY, "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "run"


def copy_of(run: Path, destination: Path) -> Path:
    return Path(shutil.copytree(run, destination))


def files_outside(folder: Path, run: Path) -> dict[str, bytes]:
    return {name: data for name, data in snapshot(folder).items() if not (folder / name).is_relative_to(run)}


# 1. A checkpoint names a callable: nothing stored in it is ever imported or built.
def hostile_configs(victim: Path) -> dict[str, dict]:
    return {
        "builtins.open": {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
        "pathlib.Path.write_text, nested _target_": {
            "_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": [str(victim)]},
            "data": "import os; os.system('echo pwned')"},
        "numpy.save": {"_target_": "numpy.save", "file": str(victim), "arr": [1, 2, 3]},
        "os.makedirs": {"_target_": "os.makedirs", "name": str(victim.parent / "made_by_the_checkpoint")},
        "logging.FileHandler": {"_target_": "logging.FileHandler", "filename": str(victim), "mode": "w"},
    }


@pytest.mark.parametrize("group", ["algo", "network"])
@pytest.mark.parametrize("name", list(hostile_configs(Path("victim.txt"))))
def test_rlrun_eval_and_resume_never_build_what_a_checkpoint_names(finished, tmp_path, group, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data\n")
    run = copy_of(finished, tmp_path / "run")
    for file in ("best.pt", "last.pt"):
        payload = checkpoint.load(run / "checkpoints" / file)
        payload["config"][group] = hostile_configs(victim)[name]
        checkpoint.save(run / "checkpoints" / file, payload)
    before, outside = snapshot(run), files_outside(tmp_path, run)

    evaluated = run_rlrun("run", command="rlrun-eval", cwd=tmp_path)
    assert_one_line_error(evaluated, "it is not this run's checkpoint")
    resumed = run_rlrun("resume=run", "total_steps=400", cwd=tmp_path)
    assert_one_line_error(resumed, "which a resume cannot change")
    assert files_outside(tmp_path, run) == outside and snapshot(run) == before


def test_a_run_folder_whose_overrides_name_code_is_refused(finished, tmp_path):
    run = copy_of(finished, tmp_path / "run")
    overrides = run / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- algo._target_=builtins.open\n")
    before = snapshot(run)
    for result in (run_rlrun("run", command="rlrun-eval", cwd=tmp_path), run_rlrun("resume=run", cwd=tmp_path)):
        assert_one_line_error(result, "sets algo._target_=builtins.open: the overrides of a run choose config options")
    assert snapshot(run) == before


# 2. A resume applies what it is told, or refuses it naming the key.
def test_a_new_learning_rate_on_resume_reaches_the_optimizer(tmp_path):
    first = run_rlrun("algo=dqn", "total_steps=600", "checkpoint.every=300", "eval.every=300", "eval.episodes=2",
                      "progress=false", "hydra.run.dir=lr", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_rlrun("resume=lr", "total_steps=900", "algo.lr=0.01", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    last = checkpoint.load(tmp_path / "lr" / "checkpoints" / "last.pt")
    groups = last["agent"]["optimizer"]["param_groups"]
    assert [group.get("initial_lr", group["lr"]) for group in groups] == [0.01]  # the schedule's base moved too
    assert last["config"]["algo"]["lr"] == 0.01
    assert "- algo.lr=0.01" in (tmp_path / "lr" / ".hydra" / "overrides.yaml").read_text()  # the next resume keeps it


@pytest.mark.parametrize("change, key", [
    (["network.hidden_sizes=[7]"], "network.hidden_sizes"),
    (["env=Acrobot-v1"], "env.id"),
    (["algo=a2c"], "algo._target_"),
    (["seed=1"], "seed"),
])
def test_a_resume_refuses_a_change_it_cannot_apply_naming_the_key(finished, tmp_path, change, key):
    run = copy_of(finished, tmp_path / "run")
    before = snapshot(run)
    assert_one_line_error(run_rlrun("resume=run", "total_steps=400", *change, cwd=tmp_path),
                          f"which a resume cannot change (the saved agent, envs and random streams are built for the "
                          f"old value); resume without changing {key}")
    assert snapshot(run) == before


def test_a_resume_refuses_a_hyperparameter_the_saved_agent_cannot_take(tmp_path):
    first = run_rlrun("algo=dqn", "total_steps=200", "checkpoint.every=100", "eval.every=100", "eval.episodes=2",
                      "progress=false", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = snapshot(tmp_path / "run")
    assert_one_line_error(run_rlrun("resume=run", "total_steps=300", "algo.dueling=true", cwd=tmp_path),
                          "does not fit the agent this run builds")
    assert snapshot(tmp_path / "run") == before


# 3. One run per folder.
@pytest.mark.parametrize("stop", ["steps:0:20", "steps:1:20"], ids=["before its first checkpoint", "after it"])
def test_a_second_start_in_a_running_folder_is_refused_naming_the_process(tmp_path, stop):
    marker = tmp_path / ".stopped"
    first = subprocess.Popen([RLRUN, *stoppable("CartPole-v1"), *TINY, "hydra.run.dir=run"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), "RLRUN_TEST_STOP": stop,
                                  "RLRUN_TEST_STOPPED": str(marker)})
    try:
        while not marker.exists():
            assert first.poll() is None, "the first run ended before its stop point"
            time.sleep(0.02)
        before = snapshot(tmp_path / "run")
        second = run_rlrun(*stoppable("CartPole-v1"), *TINY, "hydra.run.dir=run", cwd=tmp_path)
        assert_one_line_error(second, f"run is in use by a running rlrun (pid {first.pid} on ")
        assert snapshot(tmp_path / "run") == before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    after_the_crash = run_rlrun(*stoppable("CartPole-v1"), *TINY, "hydra.run.dir=run", cwd=tmp_path)
    assert after_the_crash.returncode == 0, after_the_crash.stderr  # the kernel released the dead run's lock
    assert read_summary(tmp_path / "run")["env_steps"] == 300


def test_another_seed_in_a_run_folder_is_refused(finished, tmp_path):
    run = copy_of(finished, tmp_path / "run")
    before = snapshot(run)
    assert_one_line_error(run_rlrun(*TINY, "seed=1", "hydra.run.dir=run", cwd=tmp_path),
                          "was written by a run with seed=0, and this run sets seed=1")
    assert snapshot(run) == before


# 4. A full disk.
@pytest.fixture
def tiny_disk(tmp_path) -> Path:
    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def assert_unchanged_but_the_log(folder: Path, before: dict[str, bytes]) -> None:
    after = snapshot(folder)
    assert after.keys() == before.keys()
    for name, data in before.items():
        assert after[name].startswith(data) if name.endswith("rlrun.log") else after[name] == data, name


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tiny_disk, tmp_path):
    full = run_rlrun("algo=dqn", "total_steps=2000", "checkpoint.every=500", "eval.every=500", "progress=false",
                     "hydra.run.dir=tiny/dqn", cwd=tmp_path)
    assert_one_line_error(full, "No space left on device while writing ")
    assert not list(tiny_disk.rglob("*.rlrun-tmp"))

    shutil.rmtree(tiny_disk / "dqn")
    small = run_rlrun("algo=qlearning", "env=FrozenLake-v1", "total_steps=1000", "checkpoint.every=500",
                      "eval.every=500", "progress=false", "hydra.run.dir=tiny/q", cwd=tmp_path)
    assert small.returncode == 0, small.stderr
    with pytest.raises(OSError), open(tiny_disk / "filler", "wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()
    before = snapshot(tiny_disk / "q")
    assert_one_line_error(run_rlrun("resume=tiny/q", "total_steps=2000", cwd=tmp_path),
                          "No space left on device while writing ")
    assert_unchanged_but_the_log(tiny_disk / "q", before)


# 5., 6., 7., 9. Bad input: one line, exit code 2, before anything is written.
BAD_INPUT = {
    "batch larger than the buffer": (["algo=dqn", "algo.batch_size=5000", "algo.buffer_size=1000"],
                                     "algo.batch_size=5000 is larger than algo.buffer_size=1000"),
    "sac batch larger than the buffer": (["algo=sac", "env=Pendulum-v1", "algo.batch_size=300", "algo.buffer_size=200"],
                                         "algo.batch_size=300 is larger than algo.buffer_size=200"),
    "negative seed": (["seed=-1"], "seed=-1 is invalid: it must be an integer >= 0"),
    "huge seed": (["seed=1e30"], "seed=1e+30 is invalid: it must be an integer >= 0"),
    "seed that is not a number": (["seed=abc"], "seed='abc' is invalid"),
    "env kwarg the env does not take": (["+env.kwargs.foo=1"], "does not take the keyword arguments given "
                                                               "(env.kwargs.foo)"),
    "unknown top-level key": (["gamma=1.5"], "gamma is not a key of the config: did you mean algo.gamma?"),
    "unknown algo key": (["algo.lrr=0.1"], "algo.lrr is not a key of the config: did you mean algo.lr"),
    "empty run folder": (["hydra.run.dir="], "hydra.run.dir= is empty"),
    "module that is not installed": (["env=gym", "env.id=nosuchmod:Foo-v0"], "there is no module 'nosuchmod'"),
    "module whose import fails": (["env=gym", "env.id=imports_a_missing_module:Foo-v0"],
                                  "module 'imports_a_missing_module' needs 'no_such_dependency', which is not installed"),
    "zero steps": (["total_steps=0"], "total_steps=0 is invalid: it must be a positive integer"),
    "keep no checkpoint": (["checkpoint.keep=0"], "checkpoint.keep=0 is invalid"),
    "save_replay=maybe": (["checkpoint.save_replay=maybe"], "checkpoint.save_replay='maybe' is invalid"),
    "a near-miss env name": (["env=CartPol-v1"], "did you mean env=CartPole-v1 or env=gym env.id=CartPole-v0"),
}


@pytest.mark.parametrize("args, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "imports_a_missing_module.py").write_text("import no_such_dependency\n")
    (tmp_path / "summary.json").write_text('{"the user": "data"}\n')
    before = snapshot(tmp_path)
    result = run_rlrun(*args, cwd=tmp_path, env={"PYTHONPATH": f"{Path(__file__).parent}:{tmp_path}"})
    assert_one_line_error(result, message)
    assert snapshot(tmp_path) == before  # no run folder, no outputs/, the summary.json in the working folder kept


def test_a_user_error_in_a_sweep_job_is_its_line_and_exit_code_2(tmp_path):
    result = run_rlrun("-m", "algo.gamma=0.9,1.5", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert_one_line_error(result, "algo.gamma=1.5 is invalid: it must be a number in [0, 1]")
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == 1  # the other job ran to its end


def ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child: a child inherits an ignored SIGINT (left so in this worker by an
    earlier test's library), and Python then never raises KeyboardInterrupt, so the run would not stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_with_the_resume_command_and_exit_code_130(tmp_path):
    marker = tmp_path / ".stopped"
    process = subprocess.Popen([RLRUN, *stoppable("CartPole-v1"), *TINY, "hydra.run.dir=run"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parent),
                                    "RLRUN_TEST_STOP": "steps:1:20", "RLRUN_TEST_STOPPED": str(marker)},
                               preexec_fn=ctrl_c_as_in_a_terminal)
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith("rlrun: error: interrupted at env step ") and stderr.endswith("rlrun resume=run\n")
    assert (tmp_path / "run" / "checkpoints" / "interrupted.pt").is_file()
    resumed = run_rlrun("resume=run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def test_rlrun_eval_refuses_bad_options_and_a_video_without_moviepy(finished, tmp_path):
    run = copy_of(finished, tmp_path / "run")
    before = snapshot(run)
    assert_one_line_error(run_rlrun("run", "seed=-1", command="rlrun-eval", cwd=tmp_path), "seed=-1 is invalid")
    (tmp_path / "no_moviepy").mkdir()
    (tmp_path / "no_moviepy" / "moviepy.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'moviepy'\", name='moviepy')\n")
    assert_one_line_error(run_rlrun("run", "video=true", command="rlrun-eval", cwd=tmp_path,
                                    env={"PYTHONPATH": str(tmp_path / "no_moviepy")}),
                          "video=true needs moviepy, which is not installed: pip install 'rlrun[video]'")
    assert snapshot(run) == before


@pytest.mark.parametrize("damage, message", [
    ("{\"final_eval\": ", "summary.json is not valid JSON"),
    ("{\"seed\": 0}", "summary.json is incomplete (it has no env_steps, steps_per_second, final_eval)"),
])
def test_rlrun_report_refuses_a_damaged_summary_in_one_line(finished, tmp_path, damage, message):
    run = copy_of(finished, tmp_path / "run")
    (run / "summary.json").write_text(damage)
    before = snapshot(run)
    assert_one_line_error(run_rlrun("run", command="rlrun-report", cwd=tmp_path), message)
    assert snapshot(run) == before


def test_resume_of_a_file_names_the_run_folder(finished, tmp_path):
    copy_of(finished, tmp_path / "run")
    assert_one_line_error(run_rlrun("resume=run/checkpoints/last.pt", cwd=tmp_path),
                          "resume=run/checkpoints/last.pt is a file; give the run's folder (resume=run)")


def test_an_unreadable_checkpoint_is_never_advised_to_be_loaded_unsafely(finished, tmp_path):
    run = copy_of(finished, tmp_path / "run")
    (run / "checkpoints" / "best.pt").write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    result = run_rlrun("run", command="rlrun-eval", cwd=tmp_path)
    assert_one_line_error(result, "cannot be read safely (Trying to load unsupported GLOBAL posix.system")
    assert "weights_only=False" not in result.stderr and "will likely succeed" not in result.stderr


def test_nan_from_the_env_is_blamed_on_the_env(tmp_path):
    result = run_rlrun("env=gym", "env.id=rlrun_test_envs:RlrunTest/Corridor-v0", "+env.kwargs.reward=nan",
                       "+env.kwargs.disable_env_checker=true", "total_steps=200", "hydra.run.dir=run", cwd=tmp_path)
    assert_one_line_error(result, "the env returned a non-finite reward (nan) at env step 1; training stopped")


# 8. Leftovers and records.
def test_a_finished_run_is_not_resumed_and_total_steps_below_the_steps_done_are_refused(finished, tmp_path):
    run = copy_of(finished, tmp_path / "run")
    before = snapshot(run)
    assert_one_line_error(run_rlrun("resume=run", cwd=tmp_path),
                          "the run in run is finished (300 env steps, summary.json); resume with total_steps=<more")
    assert_one_line_error(run_rlrun("resume=run", "total_steps=200", cwd=tmp_path),
                          "total_steps=200 is below the 300 env steps")
    assert snapshot(run) == before


def test_records_are_written_with_the_umask_s_mode(finished):
    umask = os.umask(0)
    os.umask(umask)
    for path in [*finished.glob("checkpoints/*.pt"), finished / "summary.json"]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


@pytest.mark.slow
def test_ten_kills_at_random_points_resume_to_the_same_summary(tmp_path):
    """Ten SIGKILLs, one after each resume, at random known points (a step after a checkpoint, or inside a
    checkpoint write), then a last resume to the end: the summary of an uninterrupted run, and no temp file."""
    args = [*stoppable("FrozenLake-v1"), "algo=qlearning", "total_steps=4000", "checkpoint.every=250",
            "eval.every=250", "eval.episodes=2", "progress=false", "seed=0"]
    whole = run_rlrun(*args, "hydra.run.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    rng = random.Random(21)
    stops = [f"steps:1:{rng.randint(1, 240)}"]  # the first one after a last.pt, to resume from
    stops += [rng.choice([f"steps:1:{rng.randint(1, 240)}", f"write:{rng.randint(1, 3)}", f"rename:{rng.randint(1, 3)}"])
              for _ in range(9)]
    killed_at(stops[0], [*args, "hydra.run.dir=killed"], tmp_path)
    for previous, stop in zip(stops, [*stops[1:], None]):
        if not previous.startswith("steps"):
            assert list((tmp_path / "killed" / "checkpoints").glob(".*.rlrun-tmp")), previous  # killed mid-write
        if stop is not None:
            killed_at(stop, ["resume=killed"], tmp_path)
    resumed = run_rlrun("resume=killed", cwd=tmp_path)
    assert resumed.returncode == 0, f"{stops}: {resumed.stderr}"
    expected, got = read_summary(tmp_path / "whole"), read_summary(tmp_path / "killed")
    assert {key: got[key] for key in SAME} == {key: expected[key] for key in SAME}, stops
    assert not list((tmp_path / "killed").rglob("*.rlrun-tmp"))
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["seed"] == 0
