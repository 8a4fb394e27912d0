"""The sweeper: each round asks Optuna for n_jobs trials, launches them as Hydra jobs, and tells Optuna each job's
outcome: its return value (COMPLETE), its optuna.TrialPruned (PRUNED) or any other exception (FAIL)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.errors import OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

# The trial's user attribute that holds the pruner's config, read back by rlrun.pruning in the job
PRUNER_ATTR = "pruner"
TRIAL_KEY = "sweep.trial"


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: DictConfig, pruner: DictConfig, direction: Any, storage: str | None,
                 study_name: str | None, n_trials: int, n_jobs: int, max_failure_rate: float,
                 params: DictConfig | None) -> None:
        from hydra.utils import instantiate

        self.sampler, self.pruner = instantiate(sampler), instantiate(pruner)
        self.pruner_config = OmegaConf.to_container(pruner)
        self.directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        fixed, space = search_space(self.params, arguments)
        pruning = not isinstance(self.pruner, optuna.pruners.NopPruner)
        if pruning and self.storage is None:
            user_error("hydra.sweeper.pruner needs hydra.sweeper.storage (e.g. sqlite:///sweeps.db): the trials "
                       "report their evaluations to the study from their own jobs")
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner,
                                    sampler=self.sampler, directions=self.directions,
                                    load_if_exists=True)
        check_compatible(study, space)
        log.info(f"Study {study.study_name} in {self.storage or 'memory'}: {len(study.trials)} trials so far, "
                 f"{self.n_trials} to add; sampler {type(study.sampler).__name__}, pruner {type(self.pruner).__name__}")
        job_number, done, failed = 0, 0, 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = []
            for trial in trials:
                if pruning:
                    trial.set_user_attr(PRUNER_ATTR, self.pruner_config)
                batch.append([*fixed, *(f"{key}={value}" for key, value in trial.params.items()),
                              *self.trial_overrides(trial.number)])
            returns = self.launcher.launch(batch, initial_job_idx=job_number)
            job_number += len(batch)
            for trial, job in zip(trials, returns):
                try:
                    value = job.return_value  # raises the job's exception
                except optuna.TrialPruned:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    continue
                except Exception as error:
                    value, why = None, f"{type(error).__name__}: {error}"
                else:
                    why = "a user error, its line above"  # a job stopped by a user error returns no value
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log.warning(f"Trial {trial.number} failed ({why}); its overrides: {' '.join(job.overrides)}")
                    failed += 1
                else:
                    study.tell(trial, value)
            done += len(batch)
            if failed / done > self.max_failure_rate:
                raise RuntimeError(f"{failed} of {done} trials failed, more than hydra.sweeper.max_failure_rate="
                                   f"{self.max_failure_rate}; the search stops")
        self.report(study)

    def trial_overrides(self, number: int) -> list[str]:
        """`sweep.trial`: how the job finds its trial in the study (rlrun.pruning), kept out of the job's folder name
        (hydra.job.override_dirname); none for a study in memory."""
        if self.storage is None:
            return []
        trial = f"{{number:{number},study:{quoted(self.study_name)},storage:{quoted(self.storage)}}}"
        excluded = [*self.config.hydra.job.config.override_dirname.exclude_keys, TRIAL_KEY]
        return [f"++{TRIAL_KEY}={trial}",  # ++: added, or set where the config has the key
                f"hydra.job.config.override_dirname.exclude_keys=[{','.join(map(quoted, excluded))}]"]

    def report(self, study: Any) -> None:
        """Log the best trial(s) and write them to optimization_results.yaml in the sweep folder."""
        completed = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
        if not completed:
            log.warning("No trial of the study has completed")
            return
        if len(self.directions) == 1:
            results = {"name": "optuna", "best_params": study.best_params, "best_value": study.best_value}
        else:
            results = {"name": "optuna", "solutions": [{"params": trial.params, "values": trial.values}
                                                        for trial in study.best_trials]}
        log.info(f"Best: {results}")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")


def search_space(params: dict[str, str], arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(fixed overrides, {key: Optuna distribution}) from hydra.sweeper.params and the command line's overrides,
    which win: a sweep (choice, range, interval, a,b,c) is searched, any other override is passed to every trial."""
    parser, overrides = OverridesParser.create(), []
    for key, value in params.items():
        try:
            overrides += parser.parse_overrides([f"{key}={value}"])
        except OverrideParseException as error:
            user_error(f"hydra.sweeper.params: {key}: {value} is not Hydra's sweep syntax ({str(error).splitlines()[0]})")
    chosen: dict[str, Any] = {}
    for override in overrides + parser.parse_overrides(arguments):
        key = override.input_line.split("=", 1)[0]
        chosen[key] = distribution(override) if override.is_sweep_override() else override.input_line
    fixed = [value for value in chosen.values() if isinstance(value, str)]
    return fixed, {key: value for key, value in chosen.items() if not isinstance(value, str)}


def check_compatible(study: Any, space: dict[str, Any]) -> None:
    """Optuna keeps each parameter's distribution for the life of a study and refuses a trial with another one (a
    choice of other values, an interval where it had a choice) once the trial exists; refuse it before."""
    from optuna.distributions import check_distribution_compatibility

    for trial in study.get_trials(deepcopy=False):
        for key in space.keys() & trial.distributions.keys():
            try:
                check_distribution_compatibility(trial.distributions[key], space[key])
            except ValueError as error:
                user_error(f"study {study.study_name} searches {key} in {trial.distributions[key]}, not in "
                           f"{space[key]} ({error}); search other values in a new study (hydra.sweeper.study_name=...)")


def distribution(override: Override) -> Any:
    """choice(...), range(...) and a,b,c: categorical; interval(a, b): uniform, tag(log, ...) log-uniform, with tag
    int an integer."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if override.is_interval_sweep():
        interval, log_scale = override.value(), "log" in override.value().tags
        if "int" in interval.tags:
            return IntDistribution(int(interval.start), int(interval.end), log=log_scale)
        return FloatDistribution(interval.start, interval.end, log=log_scale)
    # lists and dicts as override strings ("[64,64]"), other values as they are
    return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))


def user_error(message: str) -> None:
    """A mistake in the search's config: one line, exit code 2, as rlrun answers bad input."""
    print(f"rlrun: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def quoted(value: str) -> str:
    """A string as a quoted value of Hydra's override grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
