"""Tabular runs through the `rlrun` command: learning, diagnostics in TensorBoard and summary.json, checkpoints."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import read_summary, run_rlrun
from rlrun import checkpoint


@pytest.fixture(scope="module")
def cliff_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cliff")
    result = run_rlrun("algo=qlearning", "env=CliffWalking-v1", "seed=0", "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "run"


def test_tuned_q_learning_finds_the_optimal_cliff_path(cliff_run):
    summary = read_summary(cliff_run)
    assert summary["final_eval"]["mean_return"] == -13.0
    assert summary["tabular"]["greedy_value_gap"] < 1e-3
    assert summary["tabular"]["q_error_max"] >= 0


def test_optimality_gap_is_logged_at_each_evaluation(cliff_run):
    events = EventAccumulator(str(cliff_run))
    events.Reload()
    eval_steps = [s.step for s in events.Scalars("eval/mean_return")]
    assert [s.step for s in events.Scalars("tabular/greedy_value_gap")] == eval_steps
    assert [s.step for s in events.Scalars("tabular/q_error_max")] == eval_steps
    assert {"losses/td_error", "charts/epsilon", "charts/alpha"} <= set(events.Tags()["scalars"])


def test_the_q_table_is_in_the_checkpoint(cliff_run):
    q_table = checkpoint.load(cliff_run / "checkpoints" / "last.pt")["agent"]["q_table"]
    assert tuple(q_table.shape) == (48, 4)
    assert q_table.abs().sum() > 0


@pytest.mark.parametrize("algo", ["qlearning", "sarsa"])
def test_discretized_cartpole_runs(tmp_path, algo):
    result = run_rlrun(f"algo={algo}", "env=CartPole-v1", "env.discretize.bins=[6,6,12,12]", "total_steps=3000",
                       "eval.every=1500", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["env_steps"] == 3000 and "tabular" not in summary  # CartPole publishes no model
