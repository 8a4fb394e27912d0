"""Pruning through the CLI. Passes once the trainer calls rlrun.pruning.evaluation_reporter's callback after each
evaluation (on_evaluation) and lets optuna.TrialPruned out of the Hydra task."""

from __future__ import annotations

import optuna

from conftest import run_rlrun

TINY = ("total_steps=400", "eval.every=200", "eval.episodes=2", "checkpoint.every=200")
# a pruner that stops every trial at its first evaluation, whatever its return
ALWAYS = """\
_target_: optuna.pruners.ThresholdPruner
lower: 1.0e9
"""


def test_a_search_with_a_pruner_stops_trials_at_an_evaluation_and_records_them_as_pruned(tmp_path):
    (tmp_path / "conf" / "hydra" / "sweeper" / "pruner").mkdir(parents=True)
    (tmp_path / "conf" / "hydra" / "sweeper" / "pruner" / "always.yaml").write_text(ALWAYS)
    result = run_rlrun("-m", "--config-dir", "conf", "+sweep=reinforce_cartpole", "hydra/sweeper/pruner=always",
                       "hydra.sweeper.pruner.n_warmup_steps=0",  # the search's own warm-up is longer than TINY's runs
                       f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}", "hydra.sweeper.n_trials=2",
                       "hydra.sweep.dir=sweep", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="reinforce_cartpole", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert [(t.state.name, list(t.intermediate_values)) for t in trials] == [("PRUNED", [200])] * 2
    for job in ("0", "1"):  # the first seed stopped at its first evaluation: no final summary, no second seed
        assert not (tmp_path / "sweep" / job / "seed=0" / "summary.json").exists()
        assert not (tmp_path / "sweep" / job / "seed=1").exists()
        assert not (tmp_path / "sweep" / job / "error.txt").exists()  # pruned, not failed
