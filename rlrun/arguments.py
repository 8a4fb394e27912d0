"""The command line as Hydra reads it, and rlrun's config composed from it: used by `rlrun` (rlrun.cli) and by
`rlrun-eval`, which composes a run's config again from the run's own overrides.

The overrides are parsed with Hydra's OverridesParser and the config composed with Hydra's compose API, both
public; an unknown key or a bad override is one ConfigError line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from rlrun.checks import package_folder
from rlrun.errors import ConfigError

# Hydra's flags that take the next argument as their value (--info takes one only when it names a kind of info)
FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c",
                    "--package", "-p", "--shell-completion", "-sc", "--experimental-rerun"}
INFO_KINDS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"


@dataclass(frozen=True)
class CommandLine:
    """rlrun's arguments: Hydra's flags and the overrides, parsed by Hydra's own override parser."""

    flags: list[str]
    overrides: list[Override]

    @staticmethod
    def parse(argv: list[str]) -> CommandLine:
        flags, overrides = [], []
        takes_value = False
        for i, arg in enumerate(argv):
            if takes_value or arg.startswith("-"):
                flags.append(arg)
                takes_value = arg in FLAGS_WITH_VALUE or (
                    arg in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in INFO_KINDS)
            else:
                overrides.append(arg)
        try:
            return CommandLine(flags, OverridesParser.create().parse_overrides(overrides))
        except OverrideParseException as error:
            raise ConfigError(f"cannot read the overrides {' '.join(overrides)}: {str(error).splitlines()[0]}; "
                              "write each as key=value (see `rlrun --help`)") from error

    @property
    def override_texts(self) -> list[str]:
        return [override.input_line for override in self.overrides]

    def value(self, key: str) -> str | None:
        """The value given for `key` (not a sweep), as typed."""
        found = next((o for o in self.overrides if o.key_or_group == key and not o.is_sweep_override()), None)
        return None if found is None else found.get_value_element_as_str()

    def choices(self, group: str) -> list[str]:
        """The options named for a config group: one, or several in a sweep (`algo=a2c,dqn`); none for a
        sweeper's expression such as `choice(...)`."""
        for override in self.overrides:
            if override.key_or_group != group:
                continue
            if not override.is_sweep_override():
                return [override.get_value_element_as_str()]
            if override.is_discrete_sweep() and getattr(override.value(), "simple_form", False):
                return list(override.sweep_string_iterator())
        return []

    @property
    def multirun(self) -> bool:
        return bool(MULTIRUN_FLAGS & set(self.flags)) or self.value("hydra.mode") == "MULTIRUN"

    @property
    def prints_only(self) -> bool:
        """--cfg, --info, --hydra-help: Hydra answers and runs nothing."""
        return any(flag.split("=")[0] in ("--cfg", "-c", "--info", "-i", "--hydra-help") for flag in self.flags)

    def config_dirs(self) -> list[Path]:
        """Folders added with --config-dir/-cd or hydra.searchpath=[file://...,pkg://...]."""
        folders = [Path(self.flags[i + 1]) for i, flag in enumerate(self.flags[:-1]) if flag in ("--config-dir", "-cd")]
        folders += [Path(flag.split("=", 1)[1]) for flag in self.flags if flag.startswith("--config-dir=")]
        for override in self.overrides:
            if override.key_or_group == "hydra.searchpath" and isinstance(override.value(), list):
                for entry in override.value():
                    entry = str(entry)
                    folders.append(package_folder(entry.removeprefix("pkg://")) if entry.startswith("pkg://")
                                   else Path(entry.removeprefix("file://")))
        return [folder for folder in folders if folder is not None]


def swept_keys_only(argv: list[str]) -> list[str]:
    """A sweep's command line, its job folders named by the keys it sweeps alone (`algo=a2c,seed=1`): the keys it
    sets to one value go to Hydra's `hydra.job.config.override_dirname.exclude_keys` (they stay in each job's
    .hydra/overrides.yaml). A command line that sweeps nothing itself, or sets that key, is left as it is."""
    command = CommandLine.parse(argv)
    if command.value(EXCLUDE_KEYS) is not None or not any(o.is_sweep_override() for o in command.overrides):
        return argv
    constants = sorted({o.key_or_group for o in command.overrides
                        if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")})
    return [*argv, f"{EXCLUDE_KEYS}=[{','.join(constants)}]"] if constants else argv


def compose_config(overrides: list[str], config_dirs: list[Path], with_hydra: bool = False) -> DictConfig:
    """rlrun's config composed with Hydra's compose API from rlrun's config groups and `config_dirs`, as `rlrun
    *overrides` composes it; an unknown key is a one-line error that names the closest keys."""
    from hydra import compose, initialize_config_module

    searchpath = [f"file://{folder.absolute()}" for folder in config_dirs]
    overrides = [text for text in overrides if not text.startswith("hydra.searchpath=")]
    if searchpath:
        overrides.append(f"hydra.searchpath=[{','.join(searchpath)}]")
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        try:
            return compose("config", overrides, return_hydra_config=with_hydra)
        except ConfigCompositionException as error:
            key = getattr(error.__cause__, "full_key", None)
            if not key:
                raise ConfigError(str(error).splitlines()[0]) from error
            without = compose("config", [text for text in overrides if not text.startswith(f"{key}=")])
            known = config_keys(OmegaConf.to_container(without))
            raise ConfigError(unknown_key(key, known)) from error


def config_keys(node: Any, prefix: str = "") -> list[str]:
    """The dotted keys of a config's values (a plain nested dict)."""
    if not isinstance(node, dict):
        return [prefix.rstrip(".")]
    return [name for key, child in node.items() for name in config_keys(child, f"{prefix}{key}.")]


def unknown_key(key: str, known: list[str]) -> str:
    """The error for an override of a key the config does not have: the keys closest to it, by the whole dotted
    name or by its last part (`gamma` -> `algo.gamma`)."""
    last = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    close += [name for name in known if name.rsplit(".", 1)[-1] == last and name not in close]
    hint = f"did you mean {' or '.join(close[:3])}?" if close else "`rlrun --cfg job` lists the keys"
    return f"{key} is not a key of the config: {hint} (a +{key}=... override would add it, and nothing would read it)"


def saved_overrides(folder: Path) -> list[str]:
    """The overrides of the run in `folder` (its .hydra/overrides.yaml). They choose config options and values,
    never code: one that sets a `_target_` is refused."""
    path = folder / ".hydra" / "overrides.yaml"
    saved = [str(override) for override in OmegaConf.load(path)] if path.is_file() else []
    for text in saved:
        if "_target_" in text.split("=", 1)[0]:
            raise ConfigError(f"{path} sets {text}: the overrides of a run choose config options and values, not the "
                              "code that runs; remove that line")
    return saved
