"""Shared test helpers: a tiny deterministic env and running the installed `rlrun` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rlrun.core import RunContext, Transition
from rlrun.networks import network
from rlrun_test_envs import Corridor  # noqa: F401  (registers RlrunTest/Corridor-v0)

RLRUN = str(Path(sys.executable).parent / "rlrun")


def context(make_net=network, seed: int = 0, total_steps: int = 100_000) -> RunContext:
    """What the run builder passes an algorithm besides its hyperparameters, for building one in a test."""
    return RunContext(make_net=make_net, device=torch.device("cpu"), seed=seed, total_steps=total_steps)


def linear_actor_critic(in_dim: int, out_dim: int) -> nn.Linear:
    """For 1-D observations and actions: actor f(s) = 0.5 s, critic Q(s, a) = s + 2 a + 0.5."""
    layer = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5]]) if in_dim == 1 else torch.tensor([[1.0, 2.0]]))
        layer.bias.fill_(0.0 if in_dim == 1 else 0.5)
    return layer


def transition(obs, action, reward, next_obs, terminated=False, truncated=False) -> Transition:
    """One vector step of len(obs) envs with 1-D observations and actions."""
    rows = len(obs)
    return Transition(np.array(obs, np.float32).reshape(rows, 1), np.array(action, np.float32).reshape(rows, 1),
                      np.array(reward, np.float32), np.array(next_obs, np.float32).reshape(rows, 1),
                      np.full(rows, terminated), np.full(rows, truncated))


def run_rlrun(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
              command: str = "rlrun") -> subprocess.CompletedProcess:
    """Run the installed `rlrun` command (or rlrun-eval, rlrun-report) in `cwd` and capture its output."""
    return subprocess.run([str(Path(RLRUN).parent / command), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def assert_one_line_error(result: subprocess.CompletedProcess, message: str, code: int = 2) -> None:
    """A refusal as the user sees it: the exit code, one line on stderr that holds `message`, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("rlrun") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr


def stoppable(env_id: str) -> list[str]:
    """The overrides that run `env_id` inside RlrunTest/StopsAtStep-v0, where killed_at() can stop it."""
    return ["env=gym", "env.id=rlrun_test_envs:RlrunTest/StopsAtStep-v0", f"+env.kwargs.wraps={env_id}"]


def killed_at(stop: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """Start `rlrun *args`, wait until it stops at `stop` (RLRUN_TEST_STOP in rlrun_test_envs: a step after a
    checkpoint, or a moment of a checkpoint write), and SIGKILL it there: a kill at a known point of the run, not
    after a delay."""
    marker = cwd / f".stopped-{uuid.uuid4().hex}"
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([RLRUN, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                   env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {}),
                                        "RLRUN_TEST_STOP": stop, "RLRUN_TEST_STOPPED": str(marker)})
        while not marker.exists():
            if process.poll() is not None:
                stderr.seek(0)
                raise AssertionError(f"rlrun ended (exit code {process.returncode}) before it reached {stop}: "
                                     f"{stderr.read()}")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    marker.unlink()


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="session")
def reinforce_run(tmp_path_factory) -> Path:
    """One short REINFORCE run on CartPole through the CLI, shared by the tests that read its outputs."""
    workdir = tmp_path_factory.mktemp("reinforce")
    result = run_rlrun("total_steps=30000", "eval.every=5000", "checkpoint.every=10000", "seed=0",
                       "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "run"


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """The URI of a real `mlflow server` on a free 127.0.0.1 port, for the tests of one module."""
    from tracking_readers import mlflow_server

    server, uri = mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    server.terminate()
    server.wait(timeout=60)
