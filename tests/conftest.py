"""Shared test helpers: a tiny deterministic env and running the installed `rlrun` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlrun_test_envs import Corridor  # noqa: F401  (registers RlrunTest/Corridor-v0)

RLRUN = str(Path(sys.executable).parent / "rlrun")


def run_rlrun(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `rlrun` command in `cwd` and capture its output."""
    return subprocess.run([RLRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})})


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
