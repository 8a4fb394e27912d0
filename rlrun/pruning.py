"""Optuna pruning from inside a trial: each evaluation of the trial's runs is reported to its study, and a trial whose
evaluations the study's pruner finds too poor stops with optuna.TrialPruned, which the sweeper records as PRUNED.

The sweeper (hydra_plugins/rlrun_optuna_sweeper) gives every job of a search with a storage the override
`sweep.trial={number, study, storage}` and, when a pruner other than Optuna's NopPruner is chosen, stores that
pruner's config in the trial's user attribute `pruner`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra_plugins.rlrun_optuna_sweeper.sweeper import PRUNER_ATTR
from rlrun.errors import StoppedOnPurpose

FIRST_SEED_ATTR = "first_seed"


def evaluation_reporter(config: dict[str, Any]) -> Callable[[int, float], None] | None:
    """`report(env_steps, mean_eval_return)` for the run's `on_evaluation` callbacks when the job is an Optuna trial
    with pruning on, else None. report raises optuna.TrialPruned when the pruner stops the trial.

    A trial trains sweep.seeds_per_trial seeds one after another; seed `first + k` reports its evaluations at step
    `k * total_steps + env_steps`, so that each seed is compared with the same seed of the other trials."""
    where = (config.get("sweep") or {}).get("trial")
    if not where:
        return None
    import optuna
    from hydra.utils import instantiate

    storage = optuna.storages.get_storage(where["storage"])
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(where["study"]),
                                                               where["number"])
    pruner_config = storage.get_trial(trial_id).user_attrs.get(PRUNER_ATTR)
    if pruner_config is None:
        return None
    # the sampler is not used here: the trial's parameters were sampled when the sweeper asked for it
    study = optuna.load_study(study_name=where["study"], storage=storage, pruner=instantiate(pruner_config),
                              sampler=optuna.samplers.RandomSampler())
    trial = optuna.trial.Trial(study, trial_id)
    if FIRST_SEED_ATTR not in trial.user_attrs:
        trial.set_user_attr(FIRST_SEED_ATTR, config["seed"])
    offset = (config["seed"] - trial.user_attrs[FIRST_SEED_ATTR]) * config["total_steps"]

    class Pruned(optuna.TrialPruned, StoppedOnPurpose):
        """Recorded as PRUNED by the sweeper, not as a failed job."""

    def report(env_steps: int, mean_eval_return: float) -> None:
        trial.report(mean_eval_return, offset + env_steps)
        if trial.should_prune():
            raise Pruned(f"trial {where['number']} pruned at env step {env_steps} (seed {config['seed']}) "
                                     f"with eval return {mean_eval_return:.2f}")

    return report
