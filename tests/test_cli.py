"""The `rlrun` command as a user runs it: outputs on disk, TensorBoard, and one-line errors."""

from __future__ import annotations

import gc
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import RLRUN, read_summary, run_rlrun
from rlrun.cli import CommandLine, usage
from rlrun.run import garbage_collector_paused


def test_help_lists_groups_and_keys(tmp_path):
    result = run_rlrun("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert re.search(r"algo: .*\breinforce\b", result.stdout)
    assert "CartPole-v1" in result.stdout and "total_steps:" in result.stdout


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "slurm", "submitit_slurm"])
def test_help_names_launchers_that_exist(launcher):
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        cfg = compose("config", [f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith("hydra")
    assert re.search(rf"\b{launcher}\b", usage(CommandLine.parse([])))


def test_cfg_job_shows_the_composed_config(tmp_path):
    result = run_rlrun("--cfg", "job", "env=Acrobot-v1", "algo.lr=0.01", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "id: Acrobot-v1" in result.stdout and "lr: 0.01" in result.stdout


HYDRAS_OWN_PATH = "from rlrun import cli; cli.hydra_main()"  # Hydra's app alone, without rlrun's own front end
JOB_CONFIGS = {
    "defaults": [],
    "tuned preset": ["algo=dqn", "env=Acrobot-v1"],
    "no preset": ["algo=qlearning", "env=Taxi-v4", "~tuned"],
    "key overrides": ["algo.lr=0.1", "+new=1", "++seed=4", "~eval.every"],
    "missing value": ["env=gym"],
    "resolved": ["--resolve", "algo=dqn", "env=CartPole-v1", "network.hidden_sizes=[8]"],
}
LEFT_TO_HYDRA = {
    "unknown key": ["--cfg", "job", "algo.nope=1"],
    "sweep config, which sets hydra/sweeper": ["--cfg", "job", "+sweep=dqn_cartpole"],
    "hydra key": ["--cfg", "job", "hydra.job.name=x"],
    "hydra's config": ["--cfg", "hydra"],
    "package": ["--cfg", "job", "-p", "algo"],
}


@pytest.mark.parametrize("args", JOB_CONFIGS.values(), ids=JOB_CONFIGS.keys())
def hydras_own_answer(args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HYDRAS_OWN_PATH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args", JOB_CONFIGS.values(), ids=JOB_CONFIGS.keys())
def test_cfg_job_prints_what_hydras_own_path_prints(tmp_path, args):
    hydras = hydras_own_answer(["--cfg", "job", *args], tmp_path)
    assert hydras.returncode == 0, hydras.stderr
    result = run_rlrun("--cfg", "job", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == hydras.stdout


@pytest.mark.parametrize("args", LEFT_TO_HYDRA.values(), ids=LEFT_TO_HYDRA.keys())
def test_cfg_job_leaves_errors_and_hydras_own_config_to_hydra(tmp_path, args):
    hydras = hydras_own_answer(args, tmp_path)
    result = run_rlrun(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (hydras.returncode, hydras.stdout), result.stderr


def test_reinforce_learns_cartpole(reinforce_run):
    summary = read_summary(reinforce_run)
    assert summary["env_steps"] == 30000
    assert max(e["mean_return"] for e in summary["evaluations"]) >= 475


def test_run_folder_layout(reinforce_run):
    assert (reinforce_run / ".hydra" / "config.yaml").is_file()
    assert (reinforce_run / "checkpoints" / "last.pt").is_file()
    assert (reinforce_run / "checkpoints" / "best.pt").is_file()
    assert list(reinforce_run.glob("events.out.tfevents.*"))
    summary = read_summary(reinforce_run)
    assert {"final_eval", "env_steps", "wall_seconds", "steps_per_second"} <= summary.keys()
    assert summary["algo"] == "reinforce" and summary["env"] == "CartPole-v1"


def test_tensorboard_has_the_charts_losses_config_and_hparams(reinforce_run):
    events = EventAccumulator(str(reinforce_run))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/mean_return",
            "losses/policy_loss", "losses/value_loss", "losses/entropy"} <= scalars
    assert [s.step for s in events.Scalars("eval/mean_return")] == [5000, 10000, 15000, 20000, 25000, 30000]
    assert max(s.step for s in events.Scalars("charts/episodic_return")) <= 30000
    assert "config/text_summary" in events.Tags()["tensors"]
    hparams = events.PluginTagToContent("hparams")
    # the run's hparams values only: an experiment config of its own would set every run's columns in TensorBoard
    assert "_hparams_/session_start_info" in hparams and "_hparams_/experiment" not in hparams
    assert b"algo.gamma" in hparams["_hparams_/session_start_info"]


def test_default_output_folder_and_module_env_ids(tmp_path):
    result = run_rlrun("env=gym", "env.id=rlrun_test_envs:RlrunTest/Corridor-v0", "total_steps=300",
                       "eval.every=100", "progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*-reinforce-rlrun_test_envs-RlrunTest-Corridor-v0")
    assert read_summary(run_dir)["final_eval"]["mean_return"] == 5.0
    assert str(run_dir.relative_to(tmp_path)) in result.stdout


def test_everything_printed_arrives_despite_the_fast_exit(tmp_path):
    """rlrun leaves without the interpreter's teardown (cli.exit_without_teardown): its last lines must still
    arrive through a buffered pipe, here with no logging handler that would flush stdout on the way out."""
    result = run_rlrun("total_steps=300", "eval.every=100", "progress=false", "hydra/job_logging=disabled",
                       "hydra.run.dir=run", cwd=tmp_path, env={"PYTHONUNBUFFERED": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("rlrun: run folder run ")


def test_garbage_collector_is_off_while_a_run_is_built_and_on_again_after():
    with pytest.raises(RuntimeError), garbage_collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a run that fails while it is built")
    assert gc.isenabled()
    gc.disable()  # a caller who keeps the collector off keeps it off
    try:
        with garbage_collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_async_env_workers_collect_garbage(tmp_path):
    result = run_rlrun("env=gym", "env.id=rlrun_test_envs:RlrunTest/GarbageCollectedCorridor-v0", "env.num_envs=2",
                       "env.vectorization=async", "total_steps=100", "eval.every=50", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_summary(tmp_path / "run")["env_steps"] == 100


def test_package_on_the_search_path_adds_an_algo(tmp_path):
    (tmp_path / "my_configs" / "algo").mkdir(parents=True)
    (tmp_path / "my_configs" / "__init__.py").write_text("")
    (tmp_path / "my_configs" / "algo" / "fast_reinforce.yaml").write_text("defaults:\n  - reinforce\n  - _self_\n\nlr: 0.01\n")
    result = run_rlrun("algo=fast_reinforce", "hydra.searchpath=[pkg://my_configs]", "total_steps=100", "eval.every=50",
                       "hydra.run.dir=run", cwd=tmp_path, env={"PYTHONPATH": f"{Path(__file__).parent}:{tmp_path}"})
    assert result.returncode == 0, result.stderr
    assert "lr: 0.01" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()


def test_an_extreme_replay_ratio_is_warned_in_the_output_and_the_log(tmp_path):
    result = run_rlrun("algo=dqn", "algo.train_every=4", "total_steps=200", "eval.every=100", "progress=false",
                       "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warning = "is 32 gradient steps per env step, which trains slowly"
    assert warning in result.stdout
    assert warning in (tmp_path / "run" / "rlrun.log").read_text()


def test_user_config_dir_adds_an_env(tmp_path):
    (tmp_path / "conf" / "env").mkdir(parents=True)
    (tmp_path / "conf" / "env" / "Corridor.yaml").write_text(
        "defaults:\n  - gym\n  - _self_\n\nid: rlrun_test_envs:RlrunTest/Corridor-v0\nnum_envs: 2\n")
    result = run_rlrun("--config-dir", "conf", "env=Corridor", "total_steps=100", "eval.every=50",
                       "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_summary(tmp_path / "run")["env_steps"] == 100


ERRORS = {
    "unknown config name": (["env=CartPol-v1"], "unknown environment 'CartPol-v1': did you mean env=CartPole-v1"),
    "registered id without a config": (["env=CliffWalking-v1x"], "did you mean env=CliffWalking-v1"),
    "unknown gymnasium id": (["env=gym", "env.id=CartPol-v1"], "unknown environment 'CartPol-v1': did you mean CartPole-v1"),
    "missing env id": (["env=gym"], "env.id is required"),
    "module that does not import": (["env=gym", "env.id=no_such_module:Foo-v0"], "there is no module 'no_such_module'"),
    "unsupported observations": (["env=gym", "env.id=rlrun_test_envs:RlrunTest/DictObservations-v0"],
                                 "does not support Dict observations"),
    "gamma above 1": (["algo.gamma=1.5"], "algo.gamma=1.5 is invalid: it must be a number in [0, 1]"),
    "negative learning rate": (["algo.lr=-0.001"], "algo.lr=-0.001 is invalid: it must be a positive number"),
    "zero steps": (["total_steps=0"], "total_steps=0 is invalid: it must be a positive integer"),
    "negative eval interval": (["eval.every=-5"], "eval.every=-5 is invalid"),
    "unknown baseline": (["algo.baseline=median"], "algo.baseline='median' is unknown"),
    "unknown activation": (["network.activation=swish"], "network.activation='swish' is unknown"),
    "cnn on vector observations": (["network=cnn"], "network=cnn needs image observations"),
    "replay buffer larger than memory": (["algo=dqn", "algo.buffer_size=10000000000000"],
                                         "GiB of memory is available; lower algo.buffer_size"),
    "tabular on Box observations": (["algo=qlearning", "env=CartPole-v1"],
                                    "does not support Box observations; discretize them with env.discretize.bins"),
    "tabular on Box actions": (["algo=sarsa", "env=Pendulum-v1"],
                               "does not support Box actions; algorithms that handle them: "),
    "ddpg on Discrete actions": (["algo=ddpg", "env=CartPole-v1"], "algo=ddpg cannot act in CartPole-v1: it does not "
                                  "support Discrete actions; algorithms that handle them: a2c, dqn"),
    "td3 on Discrete actions": (["algo=td3", "env=CartPole-v1"], "algo=td3 cannot act in CartPole-v1: it does not "
                                  "support Discrete actions; algorithms that handle them: a2c, dqn"),
    "sac on Discrete actions": (["algo=sac", "env=CartPole-v1"], "algo=sac cannot act in CartPole-v1: it does not "
                                  "support Discrete actions; algorithms that handle them: a2c, dqn"),
    "gSDE on Discrete actions": (["algo=ppo", "env=CartPole-v1", "algo.use_sde=true"],
                                 "algo.use_sde=true explores Box actions; this env's are Discrete: set algo.use_sde=false"),
    "unbounded Box actions": (["algo=sac", "env=gym", "env.id=rlrun_test_envs:RlrunTest/UnboundedActions-v0"],
                              "algo=sac needs finite action bounds"),
    "unbounded discretization": (["algo=qlearning", "env=CartPole-v1", "env.discretize.bins=[2,2,2,2]",
                                  "env.discretize.low=null", "env.discretize.high=null"], "are unbounded"),
    "step size of 0": (["algo=qlearning", "env=FrozenLake-v1", "algo.alpha.start=0"], "algo.alpha.start=0 is invalid"),
    "unknown algo": (["algo=dqnn"], "unknown algo 'dqnn': did you mean algo=dqn?"),
    "unknown network": (["network=foo"], "unknown network 'foo': the options are auto, cnn, mlp"),
    "unknown sweep": (["-m", "+sweep=dqn_cartpol"], "unknown sweep 'dqn_cartpol': did you mean +sweep=dqn_cartpole"),
    "unknown algo in a sweep": (["-m", "algo=a2c,dqnn"], "unknown algo 'dqnn': did you mean algo=dqn?"),
    "unknown env in a sweep": (["-m", "env=CartPole-v1,Acrobt-v1"], "did you mean env=Acrobot-v1?"),
    "sweep and --cfg": (["-m", "seed=0,1", "--cfg", "job"], "leave out -m to see the config of one job"),
}


@pytest.mark.parametrize("args, message", ERRORS.values(), ids=ERRORS.keys())
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, args, message):
    result = run_rlrun(*args, "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("rlrun: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None,
                    reason="the rlrun[ray] extra is installed")
def test_ray_launcher_without_the_extra_says_how_to_install_it(tmp_path):
    result = run_rlrun("-m", "seed=0,1", "hydra/launcher=ray", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "rlrun: error: hydra/launcher=ray needs Hydra's Ray launcher: pip install 'rlrun[ray]'\n"


@pytest.mark.parametrize("launcher, multirun", [("slurm", "-m"), ("submitit_slurm", "hydra.mode=MULTIRUN")])
def test_slurm_launcher_off_a_cluster_is_one_line(tmp_path, launcher, multirun):
    off_a_cluster = {"PATH": str(Path(RLRUN).parent)}  # no srun on the PATH, also where this machine is a SLURM node
    result = run_rlrun(multirun, "seed=0,1", f"hydra/launcher={launcher}", cwd=tmp_path, env=off_a_cluster)
    assert result.returncode == 2
    assert result.stderr.startswith(f"rlrun: error: hydra/launcher={launcher} submits the jobs to SLURM, but this "
                                    "machine has no `srun`") and result.stderr.count("\n") == 1
    assert not (tmp_path / "outputs").exists()


def test_full_error_shows_the_traceback(tmp_path):
    result = run_rlrun("algo.gamma=1.5", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "algo.gamma" in result.stderr


def test_same_seed_same_run(tmp_path):
    args = ("total_steps=3000", "eval.every=1000", "seed=7", "progress=false")
    first = run_rlrun(*args, "hydra.run.dir=a", cwd=tmp_path)
    second = run_rlrun(*args, "hydra.run.dir=b", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert read_summary(tmp_path / "a")["evaluations"] == read_summary(tmp_path / "b")["evaluations"]
    assert read_summary(tmp_path / "a")["episodes"] == read_summary(tmp_path / "b")["episodes"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_a_config_error(tmp_path):
    result = run_rlrun("device=cuda", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device=cuda but torch sees no CUDA GPU; use device=cpu or device=auto" in result.stderr


def test_version_and_python_dash_m(tmp_path):
    from importlib.metadata import version

    for command in ([RLRUN, "--version"], [sys.executable, "-m", "rlrun", "--version"]):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout) == (0, f"rlrun {version('rlrun')}\n"), result.stderr
    assert "-sc install=bash" in run_rlrun("--help", cwd=tmp_path).stdout  # shell completion is named


def test_any_gymnasium_id_is_an_env_option(tmp_path):
    result = run_rlrun("--cfg", "job", "env=CartPole-v0", cwd=tmp_path)  # registered, no config of its own
    assert result.returncode == 0, result.stderr
    assert "id: CartPole-v0" in result.stdout and "normalize_observations: false" in result.stdout


CWD_ENVS = """import gymnasium as gym
gym.register("CwdTest/Corridor-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=50)
"""


def test_module_env_ids_import_from_the_working_folder_and_the_log_keeps_every_line(tmp_path):
    (tmp_path / "cwd_envs.py").write_text(CWD_ENVS)
    result = run_rlrun("env=cwd_envs:CwdTest/Corridor-v0", "total_steps=600", "eval.every=300", "eval.episodes=2",
                       "log_every_seconds=0.001", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "run" / "rlrun.log").read_text()
    assert "rlrun: reinforce on cwd_envs:CwdTest/Corridor-v0" in log  # the start line
    assert "rlrun: final eval return" in log and "rlrun: run folder run" in log
    assert re.search(r"step \d+/600, \d+ steps/s", log)  # the timed line of a run without a progress bar
    assert result.stdout.count("rlrun: final eval return") == 1  # printed once, not again by the log's console


def test_eval_video_every_records_episodes_into_tensorboard_during_training(tmp_path):
    result = run_rlrun("total_steps=2000", "eval.every=500", "eval.video_every=1000", "eval.episodes=2",
                       "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    videos = sorted(path.name for path in (tmp_path / "run" / "videos").glob("*.mp4"))
    assert videos == ["eval-step1000-episode-0.mp4", "eval-step2000-episode-0.mp4"]
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("eval/video")] == [1000, 2000]
