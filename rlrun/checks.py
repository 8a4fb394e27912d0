"""Checks of the user's input that run before anything is built; each failure is one ConfigError line.

Only the standard library and omegaconf are imported at module level, so that `rlrun --help` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.resources
import importlib.util
import numbers
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rlrun.core import ConfigError

UNIT_INTERVAL_KEYS = {"gamma", "gae_lambda", "tau", "epsilon"}
POSITIVE_NUMBER_KEYS = {"max_grad_norm"}  # plus every key that is `lr` or ends in `_lr`
POSITIVE_INT_KEYS = {"num_envs", "episodes", "episodes_per_update", "torch_threads", "batch_size",
                     "seeds_per_trial"}  # plus *_steps, *every
NULLABLE_KEYS = {"max_episode_steps", "max_grad_norm"}
MAX_GRADIENT_STEPS_PER_ENV_STEP = 8


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every non-dict value in a nested dict."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    else:
        yield path, node


def rule_for(key: str) -> str | None:
    if key in UNIT_INTERVAL_KEYS:
        return "a number in [0, 1]"
    if key in POSITIVE_NUMBER_KEYS or key == "lr" or key.endswith("_lr"):
        return "a positive number"
    if key in POSITIVE_INT_KEYS or key.endswith("_steps") or key.endswith("every"):
        return "a positive integer"
    return None


def satisfies(value: Any, rule: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if rule == "a number in [0, 1]":
        return 0 <= value <= 1
    if rule == "a positive number":
        return value > 0
    return isinstance(value, numbers.Integral) and value > 0


def check_values(config: dict[str, Any]) -> None:
    """Discount factors in [0, 1], positive learning rates, positive step counts and intervals."""
    for path, value in leaves({k: v for k, v in config.items() if k != "hydra"}):
        key = path.rsplit(".", 1)[-1]
        rule = rule_for(key)
        if rule is None or (value is None and key in NULLABLE_KEYS) or satisfies(value, rule):
            continue
        raise ConfigError(f"{path}={value!r} is invalid: it must be {rule}; fix it on the command line ({path}=...)")


def replay_ratio_warning(algo: dict[str, Any]) -> str | None:
    """A warning when an off-policy algo makes more than MAX_GRADIENT_STEPS_PER_ENV_STEP updates per env step:
    most often `train_every` overridden alone on a preset that trains in large rounds (DQN on CartPole: 128
    gradient steps every 256 env steps), which multiplies the updates and slows the run to a crawl."""
    if "gradient_steps" not in algo or "train_every" not in algo:
        return None
    per_env_step = algo["gradient_steps"] / algo["train_every"]
    if per_env_step <= MAX_GRADIENT_STEPS_PER_ENV_STEP:
        return None
    return (f"algo.gradient_steps={algo['gradient_steps']} every algo.train_every={algo['train_every']} env steps is "
            f"{per_env_step:g} gradient steps per env step, which trains slowly; set the two together "
            f"(algo.train_every={algo['train_every']} algo.gradient_steps=1 is one update per round)")


def check_spaces(algo_name: str, algo_class: type, observation_space: Any, action_space: Any, env_id: str) -> None:
    """The algorithm must declare support for the env's observation and action space types."""
    from gymnasium.spaces import Discrete

    if not isinstance(action_space, tuple(algo_class.action_spaces)):
        kind = type(action_space).__name__
        able = [name for name, cls in algorithm_classes().items() if isinstance(action_space, tuple(cls.action_spaces))]
        suggestion = f"algorithms that handle them: {', '.join(able)}" if able else "no rlrun algorithm handles them"
        raise ConfigError(f"algo={algo_name} cannot act in {env_id}: it does not support {kind} actions; {suggestion}")
    if not isinstance(observation_space, tuple(algo_class.observation_spaces)):
        kind = type(observation_space).__name__
        hint = ("; discretize them with env.discretize.bins=[...] (bins per dimension)"
                if kind == "Box" and Discrete in algo_class.observation_spaces else "")
        raise ConfigError(f"algo={algo_name} cannot learn from {env_id}: it does not support {kind} observations{hint}")


def algorithm_classes() -> dict[str, type]:
    """Every algorithm shipped in configs/algo, by config name."""
    from omegaconf import OmegaConf

    classes = {}
    for path in sorted(packaged_configs("algo")):
        module_name, class_name = OmegaConf.load(path)["_target_"].rsplit(".", 1)
        classes[path.stem] = getattr(importlib.import_module(module_name), class_name)
    return classes


def packaged_configs(group: str) -> list[Path]:
    folder = importlib.resources.files("rlrun.configs") / group
    return [Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")]


def chosen(argv: Sequence[str], group: str) -> tuple[str, list[str]]:
    """The key as typed (`algo`, `+sweep`) and the options named for `group` on the command line: one, or several
    in a sweep (`algo=a2c,dqn`); none for a sweeper's expression such as `choice(...)`."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == group and value and "(" not in value:
            return key, value.split(",")
    return group, []


def check_choices(argv: Sequence[str]) -> None:
    """`env=`, `algo=`, `network=`, `device=` and `+sweep=` must name configs, also in a sweep's list."""
    for group in ("env", "algo", "network", "device", "sweep"):
        key, choices = chosen(argv, group)
        names = config_names(group, argv) if choices else []
        for choice in choices:
            if choice not in names:
                raise ConfigError(unknown_choice(group, key, choice, names))


def unknown_choice(group: str, key: str, choice: str, names: list[str]) -> str:
    """The error for an unknown option, with the closest names (for env, gymnasium ids too)."""
    noun, candidates, otherwise = group, names, f"the options are {', '.join(names)}"
    if group == "env":
        import gymnasium as gym

        if choice in gym.registry:
            return f"there is no env config {choice!r}; run any gymnasium id with env=gym env.id={choice}"
        noun, candidates = "environment", sorted(set(names) | set(gym.registry))
        otherwise = "list the shipped ones with `rlrun --help`, or run any gymnasium id with env=gym env.id=<id>"
    close = difflib.get_close_matches(choice, candidates, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(f'{key}={name}' for name in close)}?" if close else otherwise
    return f"unknown {noun} {choice!r}: {hint}"


def check_launcher(argv: Sequence[str]) -> None:
    """A sweep's launcher must be able to start here: Ray's is an extra, SLURM's needs a cluster."""
    if not {"-m", "--multirun", "hydra.mode=MULTIRUN"} & set(argv):
        return
    launcher = next(iter(chosen(argv, "hydra/launcher")[1]), None)
    if launcher in ("ray", "ray_aws") and importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        raise ConfigError(f"hydra/launcher={launcher} needs Hydra's Ray launcher: pip install 'rlrun[ray]'")
    if launcher in ("slurm", "submitit_slurm") and shutil.which("srun") is None:
        raise ConfigError(f"hydra/launcher={launcher} submits the jobs to SLURM, but this machine has no `srun`: run "
                          "the sweep on your cluster's login node, or try it here with hydra/launcher=submitit_local")


def config_names(group: str, argv: Sequence[str]) -> list[str]:
    """The options of a config group: the packaged ones and those in the user's config folders."""
    paths = packaged_configs(group) + [path for folder in user_config_dirs(argv) for path in (folder / group).glob("*.yaml")]
    return sorted({path.stem for path in paths})


def user_config_dirs(argv: Sequence[str]) -> list[Path]:
    """Folders added with --config-dir/-cd or hydra.searchpath=[file://...,pkg://...]."""
    folders = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            folders.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            folders.append(Path(arg.split("=", 1)[1]))
        elif "hydra.searchpath=" in arg:
            entries = [entry.strip().strip("'\"") for entry in arg.split("=", 1)[1].strip("[]").split(",")]
            folders += [package_folder(entry.removeprefix("pkg://")) if entry.startswith("pkg://")
                        else Path(entry.removeprefix("file://")) for entry in entries]
    return [folder for folder in folders if folder is not None]


def package_folder(package: str) -> Path | None:
    """The folder of an importable package (a `pkg://` search path); None when it does not import."""
    try:
        return Path(str(importlib.resources.files(package)))
    except ModuleNotFoundError:
        return None
