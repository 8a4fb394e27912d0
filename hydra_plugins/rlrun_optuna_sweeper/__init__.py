"""rlrun's Hydra sweeper for Optuna searches (`hydra/sweeper=optuna`), on Optuna's ask-and-tell API.

It reads the YAML of Hydra's own Optuna sweeper (study_name, storage, direction, n_trials, n_jobs,
max_failure_rate, sampler, params in Hydra's sweep syntax) and adds `pruner`. Hydra imports every module
of the hydra_plugins namespace package at start-up, so these modules import Optuna only when a sweep runs.
"""
