"""The configs of the sweeper (`hydra/sweeper=optuna`) and of its samplers and pruners, in Hydra's ConfigStore."""

# no `from __future__ import annotations`: Hydra runs this module before it is in sys.modules, where
# dataclasses looks string annotations up
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # OmegaConf 2.3 reads typing's generics, not list[...]

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.rlrun_optuna_sweeper.sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper gets the sampler's and pruner's configs and makes them itself
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "nop"}])
    sampler: Any = MISSING  # hydra/sweeper/sampler: tpe, random, qmc, nsgaii
    # hydra/sweeper/pruner: nop (every trial runs to the end) or median; the trial reports its evaluations
    pruner: Any = MISSING
    direction: Any = "minimize"  # minimize or maximize, or a list of them for a multi-objective task
    storage: Optional[str] = None  # e.g. sqlite:///sweeps.db; null keeps the study in memory
    study_name: Optional[str] = None  # an existing study in storage is continued
    n_trials: int = 20  # trials this sweep adds to the study
    n_jobs: int = 2  # trials handed to the launcher at once
    max_failure_rate: float = 0.0  # the sweep stops once more than this fraction of its trials failed
    params: Optional[Dict[str, str]] = None  # key: Hydra sweep syntax (choice, range, interval, tag(log, ...))


SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 10, "multivariate": False,
            "constant_liar": False},  # constant_liar: set it for n_jobs > 1, so concurrent trials spread out
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None, "qmc_type": "sobol"},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None, "population_size": 50},
}
PRUNERS = {
    "nop": {"_target_": "optuna.pruners.NopPruner"},
    # a trial stops at an evaluation whose return is worse than the median of the earlier trials' at that step
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 0,
               "interval_steps": 1},
}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="rlrun_optuna_sweeper")
for name, node in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="rlrun_optuna_sweeper")
for name, node in PRUNERS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="rlrun_optuna_sweeper")
