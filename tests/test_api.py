"""rlrun's Python API and rlrun-eval's default: the saved agent, rebuilt from rlrun's own configs, acts as in its run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_summary, run_rlrun  # reinforce_run: the suite's shared REINFORCE run

README = Path(__file__).parent.parent / "README.md"


def test_rlrun_eval_repeats_the_run_s_final_evaluation_by_default(reinforce_run):
    result = run_rlrun(str(reinforce_run / "checkpoints" / "last.pt"), command="rlrun-eval", cwd=reinforce_run.parent)
    assert result.returncode == 0, result.stderr
    final = read_summary(reinforce_run)["final_eval"]
    assert f"rlrun-eval: {final['mean_return']:.2f} +- {final['std_return']:.2f} over 10 episodes" in result.stdout
    assert "the run's own evaluation at env step 30000" in result.stdout
    evaluated = json.loads((reinforce_run / "eval.json").read_text())
    assert evaluated["mean_return"] == pytest.approx(final["mean_return"]) and evaluated["repeats_the_run"]


def test_the_readme_s_python_api_example_runs(reinforce_run, tmp_path):
    example = next(block for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
                   if "rlrun.load_agent" in block)
    path = re.search(r'load_agent\("([^"]+)"\)', example).group(1)
    script = example.replace(path, str(reinforce_run)) + "\nprint('episode return', episode_return)\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split("episode return")[-1]) > 0
