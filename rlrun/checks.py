"""Checks of the user's input that run before anything is built (the config groups named, the launcher, the
output folder, the env's spaces); each failure is one ConfigError line. The rules of config values are declared
next to what they guard (rlrun.validation).

Only the standard library and omegaconf are imported at module level, so that `rlrun --help` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.resources
import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlrun.errors import ConfigError


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


def check_choices(choices: dict[str, list[str]], folders: Sequence[Path]) -> None:
    """The options named for each config group (`env`, `algo`, ... -> names, several in a sweep) must name configs
    of that group, packaged or in the user's config folders."""
    for group, named in choices.items():
        names = config_names(group, folders) if named else []
        key = "+sweep" if group == "sweep" else group
        for choice in named:
            if choice not in names:
                raise ConfigError(unknown_choice(group, key, choice, names))


def env_id_arguments(argv: list[str], folders: Sequence[Path]) -> list[str]:
    """`env=<id>` for a gymnasium id without a config of its own -> `env=gym env.id=<id>` (`env=atari` for an
    `ALE/<Game>-v5` id): any registered id, or a `module:Env` id whose module registers it. Other arguments, and
    an env named in a sweep, are left as they are."""
    from rlrun.arguments import CommandLine

    command = CommandLine.parse(argv)
    given = next((o for o in command.overrides if o.key_or_group == "env" and not o.is_sweep_override()), None)
    env_id = None if given is None else str(given.value())
    if env_id is None or command.value("env.id") is not None or env_id in config_names("env", folders):
        return argv
    if env_id.startswith("ALE/"):
        group = "atari"
    elif is_gymnasium_id(env_id):
        group = "gym"
    else:
        return argv
    at = next(i for i, arg in enumerate(argv) if arg.split("=", 1)[0] == "env")
    return [*argv[:at], f"env={group}", f"env.id={given.get_value_element_as_str()}", *argv[at + 1:]]


def is_gymnasium_id(env_id: str) -> bool:
    """Whether gymnasium knows `env_id` (a `module:Env` id once its module is imported)."""
    import gymnasium as gym

    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except (gym.error.Error, ImportError):
        return False
    return True


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
    # a gymnasium id without a config runs as env=gym env.id=<id>
    named = [f"{key}={name}" if name in names else f"env=gym env.id={name}" for name in close]
    hint = f"did you mean {' or '.join(named)}?" if close else otherwise
    return f"unknown {noun} {choice!r}: {hint}"


def check_launcher(launcher: str | None) -> None:
    """A sweep's launcher must be able to start here: Ray's is an extra, SLURM's needs a cluster."""
    if launcher in ("ray", "ray_aws") and importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        raise ConfigError(f"hydra/launcher={launcher} needs Hydra's Ray launcher: pip install 'rlrun[ray]'")
    if launcher in ("slurm", "submitit_slurm") and shutil.which("srun") is None:
        raise ConfigError(f"hydra/launcher={launcher} submits the jobs to SLURM, but this machine has no `srun`: run "
                          "the sweep on your cluster's login node, or try it here with hydra/launcher=submitit_local")


def check_output_folder(target: str) -> None:
    """The folder a run would write under must be, or be creatable in, a writable folder."""
    existing = Path(target).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run folder {target}: {existing} is not a writable folder; "
                          "run from a writable folder or set hydra.run.dir=<a writable path>")


def config_names(group: str, folders: Sequence[Path]) -> list[str]:
    """The options of a config group: the packaged ones and those in the user's config folders."""
    paths = packaged_configs(group) + [path for folder in folders for path in (folder / group).glob("*.yaml")]
    return sorted({path.stem for path in paths})


def run_folder_of(checkpoint_path: Path) -> Path:
    """The run folder of a checkpoint file: above its checkpoints/ folder (or the folder it lies in)."""
    return checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else checkpoint_path.parent


def package_folder(package: str) -> Path | None:
    """The folder of an importable package (a `pkg://` search path); None when it does not import."""
    try:
        return Path(str(importlib.resources.files(package)))
    except ModuleNotFoundError:
        return None
