"""The `rlrun` command: reads the command line, checks what it can before Hydra starts, and hands the composed
config of each job to rlrun.run."""

from __future__ import annotations

import difflib
import importlib.resources
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict

from rlrun import run
from rlrun.checks import (check_choices, check_launcher, check_output_folder, config_names, package_folder,
                          run_folder_of)
from rlrun.errors import USER_ERRORS_IN_THIS_SWEEP, ConfigError, failure_recorded, in_sweep, user_errors

OmegaConf.register_new_resolver("path_safe", lambda name: re.sub(r"[^A-Za-z0-9._=-]+", "-", str(name)).strip("-"),
                                replace=True)

# Hydra's flags that take the next argument as their value (--info takes one only when it names a kind of info)
FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c",
                    "--package", "-p", "--shell-completion", "-sc", "--experimental-rerun"}
INFO_KINDS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
# flags that change which config Hydra composes: with them, the checks before Hydra starts leave the config to Hydra
OTHER_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--package", "-p", "--experimental-rerun"}
CHECKED_GROUPS = ("env", "algo", "network", "device", "logger", "sweep")


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


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        with user_errors():
            print(usage(CommandLine.parse(argv)))
        return
    with user_errors():
        argv = resume_arguments(argv)
        command = CommandLine.parse(argv)
        check_choices({group: command.choices(group) for group in CHECKED_GROUPS}, command.config_dirs())
        folder_key = "hydra.sweep.dir" if command.multirun else "hydra.run.dir"
        if command.value(folder_key) == "":
            raise ConfigError(f"{folder_key}= is empty: give the folder to write in ({folder_key}=<folder>), or leave "
                              "it out for a new folder under outputs/")
        if command.multirun:
            check_launcher(next(iter(command.choices("hydra/launcher")), None))
        if not command.prints_only:
            check_output_folder(command.value(folder_key) or "outputs")
            if not command.multirun and not OTHER_CONFIG_FLAGS & {flag.split("=")[0] for flag in command.flags}:
                check_single_run(command)
    sys.argv = [sys.argv[0], *argv]
    hydra_main()
    if command.multirun:
        run.stop_idle_workers()
        if USER_ERRORS_IN_THIS_SWEEP:
            raise SystemExit(2)
    else:
        run.exit_without_teardown()


def check_single_run(command: CommandLine) -> None:
    """The config Hydra will compose and the folder it will write, checked before Hydra creates that folder, so that
    a refused start leaves nothing behind."""
    cfg = compose_config(command.override_texts, command.config_dirs(), with_hydra=True)
    HydraConfig.instance().set_config(cfg)  # the run folder's name interpolates ${hydra:runtime.choices.algo}
    run_dir, algo_name = Path(cfg.hydra.run.dir), cfg.hydra.runtime.choices.algo
    with open_dict(cfg):
        del cfg["hydra"]
    run.check_before_start(cfg, run_dir, algo_name)


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


def resume_arguments(argv: list[str]) -> list[str]:
    """`resume=FOLDER` -> the run's own overrides (those given now win), run again in FOLDER.

    The run finds FOLDER/checkpoints/last.pt and continues from it. Running in a folder that holds a
    checkpoint (`hydra.run.dir=FOLDER`, a requeued cluster job) resumes the same way.
    """
    command = CommandLine.parse(argv)
    resume = command.value("resume")
    others = [arg for arg in argv if not arg.startswith("resume=")]
    if resume is None:
        run_dir = command.value("hydra.run.dir")
        holds_checkpoint = run_dir is not None and (Path(run_dir) / "checkpoints" / "last.pt").is_file()
        return [*argv, "hydra.output_subdir=null"] if holds_checkpoint else argv  # keep the run's .hydra as it is
    folder = Path(resume)
    if folder.is_file():
        raise ConfigError(f"resume={resume} is a file; give the run's folder (resume={run_folder_of(folder)})")
    if not folder.is_dir():
        raise ConfigError(f"resume={resume}: there is no such folder; give the folder of an earlier run")
    if not (folder / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"resume={resume}: the folder holds no checkpoints/last.pt to resume from; "
                          "start a new run without resume=")
    saved = saved_overrides(folder)
    flags = CommandLine.parse(others).flags
    given = [arg for arg in others if arg not in flags]
    given_keys = {override.key_or_group for override in CommandLine.parse(given).overrides}
    kept = [text for text, override in zip(saved, CommandLine.parse(saved).overrides)
            if override.key_or_group not in given_keys]
    return [*flags, *kept, *given, f"hydra.run.dir={folder}", "hydra.output_subdir=null"]


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


USAGE = """\
rlrun: train a reinforcement-learning agent; each run gets a folder under outputs/ with TensorBoard
logs, checkpoints and summary.json.

usage:
  rlrun [group=option ...] [key=value ...]    one run, e.g. rlrun algo=reinforce env=Acrobot-v1 seed=3
  rlrun -m [group=a,b ...] [key=1,2 ...]      a sweep: one run per combination
  rlrun --cfg job [overrides]                 print the composed config and exit
  rlrun --hydra-help                          Hydra's own flags (--config-dir, --info, ...)
  rlrun-report DIR                            a sweep's (or a run's) table and learning curves

sweep launchers (rlrun -m ... hydra/launcher=<name>):
  basic (one run after another), joblib (in parallel, one per core), submitit_local,
  slurm or submitit_slurm (a SLURM cluster), ray (pip install 'rlrun[ray]')

config groups (group=option):
{groups}
  tuned:   chosen for you: configs/tuned/<algo>_<env>.yaml when it exists
  +sweep:  {sweeps} (Optuna searches: rlrun -m +sweep=<name>)
  (env=gym env.id=<id> runs any gymnasium id, `module:EnvName-v0` ids included)

top-level keys (key=value) and their defaults:
{keys}
"""


def usage(command: CommandLine) -> str:
    """Our own --help: Hydra's also lists every Hydra group, which takes over a second."""
    folders = command.config_dirs()
    groups = "\n".join(f"  {group + ':':9}{', '.join(config_names(group, folders))}"
                       for group in ("algo", "env", "network", "device", "logger"))
    lines = (importlib.resources.files("rlrun.configs") / "config.yaml").read_text().splitlines()
    first_key = next(i for i, line in enumerate(lines) if re.match(r"[a-z_]+:", line) and line != "defaults:")
    keys = lines[first_key:lines.index("hydra:")]
    return USAGE.format(groups=groups, sweeps=", ".join(config_names("sweep", folders)),
                        keys="\n".join("  " + line for line in keys).rstrip())


@hydra.main(version_base="1.3", config_path="pkg://rlrun.configs", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job: train in the job's folder and return the final eval return, the objective a sweeper optimizes."""
    hydra_config = HydraConfig.get()
    job_dir = Path(hydra_config.runtime.output_dir)
    sweep = hydra_config.sweep.dir if in_sweep() else None
    with user_errors(), failure_recorded(job_dir):
        return run.train_job(cfg, job_dir, hydra_config.runtime.choices["algo"], applied_preset(hydra_config), sweep)
    return None  # a sweep job stopped by a user error: its line is printed, a sweeper records no value (a failed trial)


def applied_preset(hydra_config: DictConfig) -> str | None:
    """The name of the tuned preset this job's config applied (`optional tuned: ${algo}_${env}`), None if none."""
    name = hydra_config.runtime.choices.get("tuned")
    folders = [Path(source.path) if source.schema == "file" else package_folder(source.path)
               for source in hydra_config.runtime.config_sources if source.schema in ("file", "pkg")]
    return name if name in config_names("tuned", [folder for folder in folders if folder is not None]) else None
