"""Sweeps on real clusters on this machine: a single-node SLURM cluster (.ci/slurm-cluster) and a Ray cluster
(`ray start --head`), both on 127.0.0.1. Marked `cluster`; skipped, with the reason, only where this machine cannot
run them (SLURM not installed or not root; the rlrun[ray] extra not installed)."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import RLRUN, read_summary, run_rlrun
from test_sweeps import TINY, assert_complete, job_dirs

pytestmark = pytest.mark.cluster

SLURM_CLUSTER = Path(__file__).parent.parent / ".ci" / "slurm-cluster"
CANNOT_RUN_HERE = 3  # .ci/slurm-cluster's exit code where this machine cannot run the cluster

# One job that a test interrupts between two checkpoints: every step of the paced CartPole sleeps 5 ms, so on any
# machine the run goes on long past its first checkpoint (a requeued job is killed a few seconds after the request).
PACED = ("env=gym", "env.id=rlrun_test_envs:PacedCartPole-v0", "seed=0", "total_steps=4000",
         "eval.every=2000", "eval.episodes=2", "checkpoint.every=500")
# one CPU per job (the example's 2 would let only one job at a time run on a 2-core node), and a small memory ask
ON_THIS_NODE = ("hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1")


@pytest.fixture(scope="session")
def slurm() -> None:
    """The single-node cluster, started if it is not up (it stays up: starting it again is quick)."""
    started = subprocess.run([str(SLURM_CLUSTER), "--no-install"], capture_output=True, text=True, timeout=180)
    if started.returncode == CANNOT_RUN_HERE:
        pytest.skip(started.stderr.strip())
    assert started.returncode == 0, started.stderr


def slurm_job(job_id: str) -> str:
    """`scontrol show job`: the controller's record of a job (it keeps finished ones for MinJobAge, 300 s)."""
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout


def slurm_job_ids(sweep: Path) -> list[str]:
    """The SLURM job ids of a sweep's jobs, from submitit's folder of each: `<id>` for a single job, `<id>_<n>` for
    the tasks of an array (whose own `<id>` folder holds only the batch script)."""
    names = [path.name for path in (sweep / ".submitit").iterdir()]
    tasks = sorted(name for name in names if re.fullmatch(r"\d+_\d+", name))
    return tasks or [name for name in names if name.isdigit()]


def test_a_slurm_sweep_runs_each_job_on_the_cluster_and_rlrun_report_reads_it(slurm, tmp_path):
    result = run_rlrun("-m", "hydra/launcher=submitit_slurm", "hydra.sweep.dir=sweep", "seed=0,1", *TINY,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = job_dirs(tmp_path / "sweep")
    assert len(jobs) == 2
    for run_dir in jobs.values():
        assert_complete(run_dir)
    job_ids = slurm_job_ids(tmp_path / "sweep")
    assert len(job_ids) == 2  # an array of two tasks
    assert all("Partition=debug" in slurm_job(job_id) for job_id in job_ids)  # the controller ran them

    report = subprocess.run([str(Path(RLRUN).parent / "rlrun-report"), "sweep"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "2 runs in 1 group" in report.stdout


def test_a_failing_slurm_job_is_recorded_and_the_other_job_runs_to_the_end(slurm, tmp_path):
    result = run_rlrun("-m", "hydra/launcher=submitit_slurm", "hydra.sweep.dir=sweep", "algo.lr=-1,0.001", *TINY,
                       cwd=tmp_path)
    assert result.returncode == 0  # the refused job ran on the cluster: its line is in its SLURM log, its error.txt here
    jobs = {name.split(",")[0]: run_dir for name, run_dir in job_dirs(tmp_path / "sweep").items()}
    assert "ConfigError: algo.lr=-1 is invalid" in (jobs["algo.lr=-1"] / "error.txt").read_text()
    assert not (jobs["algo.lr=-1"] / "summary.json").exists()
    assert_complete(jobs["algo.lr=0.001"])


@pytest.fixture(scope="session")
def uninterrupted_summary(tmp_path_factory) -> dict:
    """The summary of the paced job run once from start to end, outside any cluster, and without the pauses, which
    change nothing but its wall time."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run_rlrun(*PACED, "+env.kwargs.pause_s=0", "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return read_summary(workdir / "run")


def without_wall_times(summary: dict) -> dict:
    return {key: value for key, value in summary.items() if key not in ("wall_seconds", "steps_per_second")}


def interrupt_after_first_checkpoint(workdir: Path, interrupt: Callable[[str], None]) -> None:
    """Wait for the sweep's one job to write its first checkpoint, then call `interrupt` with its SLURM job id."""
    deadline = time.monotonic() + 120
    while not list(workdir.glob("outputs/multirun/*/*/*/checkpoints/last.pt")):
        assert time.monotonic() < deadline, "the job wrote no checkpoint"
        time.sleep(0.2)
    (sweep,) = workdir.glob("outputs/multirun/*/*")
    (job_id,) = slurm_job_ids(sweep)
    interrupt(job_id)


def run_interrupted_sweep(workdir: Path, interrupt: Callable[[str], None]) -> Path:
    """The paced job as a one-job sweep on the `slurm` example launcher, in the default sweep folder (named by the
    start time, which a requeued job must not take again), interrupted once; its job folder once the sweep is done."""
    with ThreadPoolExecutor(1) as pool:
        interrupter = pool.submit(interrupt_after_first_checkpoint, workdir, interrupt)
        result = run_rlrun("-m", "hydra/launcher=slurm", *ON_THIS_NODE, *PACED, cwd=workdir)
        interrupter.result()
    assert result.returncode == 0, result.stderr
    (sweep,) = workdir.glob("outputs/multirun/*/*")  # the second attempt wrote no sweep folder of its own
    (job,) = job_dirs(sweep).values()
    assert "Restarts=1" in slurm_job(slurm_job_ids(sweep)[0])
    return job


def assert_resumed_to_the_uninterrupted_end(job: Path, uninterrupted: dict) -> None:
    """Two attempts in one folder, the second from a checkpoint before the end, with the uninterrupted summary."""
    assert len(list(job.glob("events.out.tfevents.*"))) == 2
    resumed_at = int(re.search(r"resuming at env step (\d+)", (job / "rlrun.log").read_text()).group(1))
    assert 0 < resumed_at < uninterrupted["env_steps"]
    assert without_wall_times(read_summary(job)) == without_wall_times(uninterrupted)


def test_a_job_requeued_with_scontrol_resumes_in_its_own_folder_and_ends_as_an_uninterrupted_run(
        slurm, uninterrupted_summary, tmp_path):
    """`scontrol requeue` stops the job (SIGTERM, which submitit ignores, then SIGKILL) and puts it back in the
    queue; SLURM runs the same batch script again."""
    job = run_interrupted_sweep(tmp_path, lambda job_id: subprocess.run(["scontrol", "requeue", job_id], check=True))
    assert_resumed_to_the_uninterrupted_end(job, uninterrupted_summary)


def test_a_preempted_job_is_requeued_by_submitit_and_ends_as_an_uninterrupted_run(
        slurm, uninterrupted_summary, tmp_path):
    """SIGUSR2 is submitit's checkpoint signal (SLURM sends it signal_delay_s before a time limit or a preemption):
    submitit's handler requeues the job with `scontrol requeue` and exits."""
    job = run_interrupted_sweep(
        tmp_path, lambda job_id: subprocess.run(["scancel", "--signal=USR2", job_id], check=True))
    submitit_log = "".join(path.read_text() for path in job.parent.glob(".submitit/*/*_log.*"))
    assert "Caught signal SIGUSR2" in submitit_log and "this job is preempted" in submitit_log
    assert "Requeued job" in submitit_log
    assert_resumed_to_the_uninterrupted_end(job, uninterrupted_summary)


# Ray picks the machine's own address, and listens on every interface, unless it runs as on a laptop (what this
# variable asks for on Linux too): then every Ray process listens on 127.0.0.1. Usage reports stay off.
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def ray_cluster(tmp_path_factory) -> Iterator[None]:
    """A Ray head node with 2 CPUs on 127.0.0.1, started in a folder of its own (as on a cluster, its workers do not
    run in the sweep's working directory), stopped at the end. The Ray tests take turns: `ray stop` stops every Ray."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the optional extra rlrun[ray] is not installed")
    ray = str(Path(RLRUN).parent / "ray")
    env = {**os.environ, **LOOPBACK_RAY}
    with open("/tmp/rlrun-tests-ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
                                  "--include-dashboard=false", "--disable-usage-stats"],
                                 cwd=tmp_path_factory.mktemp("ray"), env=env, capture_output=True, text=True,
                                 timeout=180)
        try:
            assert started.returncode == 0, started.stderr
            yield
        finally:
            subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_a_ray_sweep_runs_its_jobs_on_a_running_ray_cluster_and_records_the_failing_ones(ray_cluster, tmp_path):
    result = run_rlrun("-m", "hydra/launcher=ray", "hydra.launcher.ray.init.address=auto",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}", "algo.lr=-1,0.001", "seed=0,1", *TINY,
                       cwd=tmp_path, env=LOOPBACK_RAY)
    assert result.returncode == 0  # the refused jobs ran on Ray workers: their lines and error.txt files tell
    assert "rlrun: error: algo.lr=-1 is invalid" in result.stderr  # Ray forwards its workers' output
    assert "Connecting to existing Ray cluster at address: 127.0.0.1:" in result.stderr
    jobs = job_dirs(tmp_path / "sweep")
    assert len(jobs) == 4
    for name, run_dir in jobs.items():
        if name.startswith("algo.lr=-1,"):
            assert "ConfigError: algo.lr=-1 is invalid" in (run_dir / "error.txt").read_text()
        else:
            assert_complete(run_dir)
    assert {read_summary(run_dir)["seed"] for name, run_dir in jobs.items() if "lr=0.001" in name} == {0, 1}


def test_a_ray_sweep_in_the_default_relative_folder_writes_its_jobs_under_the_working_folder(ray_cluster, tmp_path):
    result = run_rlrun("-m", "hydra/launcher=ray", "hydra.launcher.ray.init.address=auto", "seed=0", *TINY,
                       cwd=tmp_path, env=LOOPBACK_RAY)
    assert result.returncode == 0, result.stderr
    assert len(job_dirs(next((tmp_path / "outputs" / "multirun").glob("*/*")))) == 1
