"""rlrun's Python API and rlrun-eval's default: the saved agent, rebuilt from rlrun's own configs, acts as in its run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_summary, run_rlrun

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("api")
    result = run_rlrun("total_steps=2000", "eval.every=1000", "eval.episodes=7", "seed=3", "hydra.run.dir=run",
                       cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "run"


def test_rlrun_eval_repeats_the_run_s_final_evaluation_by_default(short_run):
    result = run_rlrun(str(short_run / "checkpoints" / "last.pt"), command="rlrun-eval", cwd=short_run.parent)
    assert result.returncode == 0, result.stderr
    final = read_summary(short_run)["final_eval"]
    assert f"rlrun-eval: {final['mean_return']:.2f} +- {final['std_return']:.2f} over 7 episodes" in result.stdout
    assert "the run's own evaluation at env step 2000" in result.stdout
    evaluated = json.loads((short_run / "eval.json").read_text())
    assert evaluated["mean_return"] == pytest.approx(final["mean_return"]) and evaluated["repeats_the_run"]


def test_the_readme_s_python_api_example_runs(short_run, tmp_path):
    example = next(block for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
                   if "rlrun.load_agent" in block)
    path = re.search(r'load_agent\("([^"]+)"\)', example).group(1)
    script = example.replace(path, str(short_run)) + "\nprint('episode return', episode_return)\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split("episode return")[-1]) > 0
