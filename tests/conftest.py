"""Shared test helpers: a tiny deterministic env and running the installed `rlrun` command."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
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


def run_rlrun(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `rlrun` command in `cwd` and capture its output."""
    return subprocess.run([RLRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})})


def kill_after_first_checkpoint(args: list[str], run_dir: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
    """Start `rlrun *args` (writing into `run_dir`) and SIGKILL it at a random moment after its first last.pt."""
    process = subprocess.Popen([RLRUN, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})})
    last = run_dir / "checkpoints" / "last.pt"
    while not last.exists():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "summary.json").exists()  # it died before the end


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
