"""The `rlrun` command: reads the command line, checks what it can before Hydra starts, and hands the composed
config of each job to rlrun.run."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from rlrun import run
from rlrun.arguments import CommandLine, compose_config, saved_overrides, swept_keys_only
from rlrun.checks import (check_choices, check_launcher, check_output_folder, config_names, env_id_arguments,
                          package_folder, run_folder_of)
from rlrun.errors import USER_ERRORS_IN_THIS_SWEEP, ConfigError, failure_recorded, in_sweep, user_errors

OmegaConf.register_new_resolver("path_safe", lambda name: re.sub(r"[^A-Za-z0-9._=-]+", "-", str(name)).strip("-"),
                                replace=True)

# flags that change which config Hydra composes: with them, the checks before Hydra starts leave the config to Hydra
OTHER_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--package", "-p", "--experimental-rerun"}
CHECKED_GROUPS = ("env", "algo", "network", "device", "logger", "sweep")


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        with user_errors():
            print(usage(CommandLine.parse(argv)))
        return
    if argv == ["--version"]:
        print(f"rlrun {importlib.metadata.version('rlrun')}")
        return
    # console scripts leave the working folder off sys.path, where `python -m rlrun` and `python script.py` have it:
    # `env.id=my_module:MyEnv-v0` imports my_module from it (last, so that it shadows no installed package)
    sys.path.append(os.getcwd())
    with user_errors():
        argv = resume_arguments(argv)
        argv = env_id_arguments(argv, CommandLine.parse(argv).config_dirs())
        command = CommandLine.parse(argv)
        check_choices({group: command.choices(group) for group in CHECKED_GROUPS}, command.config_dirs())
        folder_key = "hydra.sweep.dir" if command.multirun else "hydra.run.dir"
        if command.value(folder_key) == "":
            raise ConfigError(f"{folder_key}= is empty: give the folder to write in ({folder_key}=<folder>), or leave "
                              "it out for a new folder under outputs/")
        if command.multirun and command.prints_only:
            raise ConfigError("-m runs a sweep and --cfg, --info print one config: leave out -m to see the config of "
                              "one job (rlrun --cfg job seed=0), or --cfg to run the sweep")
        if command.multirun:
            launcher = next(iter(command.choices("hydra/launcher")), None)
            check_launcher(launcher)
            if launcher in ("ray", "ray_aws"):
                argv = [*(arg for arg in argv if not arg.startswith("hydra.sweep.dir=")), absolute_sweep_folder(command)]
            argv = swept_keys_only(argv)
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


def absolute_sweep_folder(command: CommandLine) -> str:
    """The override that roots a relative sweep folder at the working folder: Ray's workers run elsewhere and would
    resolve a relative one in their own working folder."""
    folder = command.value("hydra.sweep.dir")
    if folder is None:
        primary = OmegaConf.create((importlib.resources.files("rlrun.configs") / "config.yaml").read_text())
        folder = OmegaConf.to_container(primary.hydra.sweep)["dir"]  # unresolved: ${now:...} resolves in the sweep
    if not Path(folder).is_absolute():
        folder = f"{Path.cwd()}/{folder}"
    return "hydra.sweep.dir='" + folder.replace("\\", "\\\\").replace("'", "\\'") + "'"


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


USAGE = """\
rlrun: train a reinforcement-learning agent; each run gets a folder under outputs/ with TensorBoard
logs, checkpoints and summary.json.

usage:
  rlrun [group=option ...] [key=value ...]    one run, e.g. rlrun algo=reinforce env=Acrobot-v1 seed=3
  rlrun -m [group=a,b ...] [key=1,2 ...]      a sweep: one run per combination
  rlrun --cfg job [overrides]                 print the composed config and exit
  rlrun --hydra-help                          Hydra's own flags (--config-dir, --info, ...)
  rlrun-report DIR                            a sweep's (or a run's) table and learning curves
  rlrun-eval PATH                             evaluate a saved agent (a checkpoint or a run folder)
  rlrun --version                             rlrun's version (python -m rlrun works as rlrun)
  rlrun -sc install=bash                      tab completion of groups, options and keys in this shell
                                              (eval "$(rlrun -sc install=bash)" in ~/.bashrc; zsh, fish too)

sweep launchers (rlrun -m ... hydra/launcher=<name>):
  basic (one run after another), joblib (in parallel, one per core), submitit_local,
  slurm or submitit_slurm (a SLURM cluster), ray (pip install 'rlrun[ray]')

config groups (group=option):
{groups}
  tuned:   chosen for you: configs/tuned/<algo>_<env>.yaml when it exists
  +sweep:  {sweeps} (Optuna searches: rlrun -m +sweep=<name>)
  (env=<id> runs any registered gymnasium id, with its shipped config where there is one, else
   env=gym env.id=<id>; `module:EnvName-v0` ids import the module, from the working folder too)

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
