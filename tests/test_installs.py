"""The installs the README gives, each resolved by pip in a fresh virtual environment against the package index
(`pip install --dry-run`: nothing is downloaded beyond metadata). Offline, deselect them with `-m 'not index'`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.index


def resolved(tmp_path: Path, *requirements: str) -> dict[str, Version]:
    """{name: version} pip installs for `requirements` into a new, empty venv (torch pinned to the CPU build CI
    uses, as the README's install does, so that pip does not resolve gigabytes of CUDA wheels)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp_path / "venv" / "bin" / "python"),
                             "install", "--dry-run", "--quiet", "--report", str(tmp_path / "report.json"),
                             "torch==2.13.0", *requirements], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    return {item["metadata"]["name"].lower().replace("_", "-"): Version(item["metadata"]["version"])
            for item in report["install"]}


@pytest.mark.parametrize("requirements, expected", [
    ([".[bench]"], {"stable-baselines3", "rl-zoo3"}),
    ([".", "rl-zoo3"], {"rl-zoo3"}),
    ([".", "optuna-dashboard"], {"optuna-dashboard"}),
], ids=["bench", "rl-zoo3", "optuna-dashboard"])
def test_rlrun_installs_beside_the_optuna_users_of_rl_zoo3_and_optuna_dashboard(tmp_path, requirements, expected):
    versions = resolved(tmp_path, *requirements)
    assert {"rlrun", *expected} <= versions.keys()
    assert versions["optuna"] >= Version("4") and versions["sqlalchemy"] >= Version("2")


def test_the_dev_install_has_current_optuna_sqlalchemy_and_both_trackers(tmp_path):
    versions = resolved(tmp_path, ".[dev]")
    assert versions["optuna"] >= Version("4") and versions["sqlalchemy"] >= Version("2")
    assert versions["moviepy"] >= Version("2")
    assert {"wandb", "mlflow", "pytest", "pytest-xdist"} <= versions.keys()
    assert "hydra-optuna-sweeper" not in versions
