"""The `rlrun` command: Hydra composes the config, `train` builds envs and agent and runs the Trainer.

torch, gymnasium and tensorboard are imported only when a run starts, so `rlrun --help` and
`rlrun --cfg job` answer quickly.
"""

from __future__ import annotations

import atexit
import gc
import importlib.resources
import logging
import multiprocessing
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from rlrun.checks import check_choices, check_launcher, check_spaces, check_values, config_names, replay_ratio_warning
from rlrun.core import ConfigError

log = logging.getLogger(__name__)

OmegaConf.register_new_resolver("path_safe", lambda name: re.sub(r"[^A-Za-z0-9._=-]+", "-", str(name)).strip("-"),
                                replace=True)


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        print(usage(argv))
        return
    with user_errors():
        argv = resume_arguments(argv)
        check_choices(argv)
        check_launcher(argv)
        check_output_folder(argv)
    if print_job_config(argv):
        return
    sys.argv = [sys.argv[0], *argv]
    hydra_main()
    exit_without_teardown()


def exit_without_teardown() -> None:
    """Exit with code 0 once every run is done, skipping the interpreter's module teardown, where torch
    unregisters its operators one by one: over a second in every process that trained. The idle workers of
    a finished joblib sweep are stopped before they spend that second too. The interpreter's other exit
    steps run as usual: joining non-daemon threads (a launcher's), then the atexit handlers (logging,
    launchers); everything rlrun writes is closed by then."""
    for worker in multiprocessing.active_children():
        worker.terminate()
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def resume_arguments(argv: list[str]) -> list[str]:
    """`resume=FOLDER` -> the run's own overrides (those given now win), run again in FOLDER.

    The trainer finds FOLDER/checkpoints/last.pt and continues from it. Running in a folder that holds a
    checkpoint (`hydra.run.dir=FOLDER`, a requeued cluster job) resumes the same way.
    """
    resume = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("resume=")), None)
    others = [arg for arg in argv if not arg.startswith("resume=")]
    if resume is None:
        run_dir = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("hydra.run.dir=")), None)
        holds_checkpoint = run_dir is not None and (Path(run_dir) / "checkpoints" / "last.pt").is_file()
        return [*argv, "hydra.output_subdir=null"] if holds_checkpoint else argv  # keep the run's .hydra as it is
    folder = Path(resume)
    if not folder.is_dir():
        raise ConfigError(f"resume={resume}: there is no such folder; give the folder of an earlier run")
    if not (folder / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"resume={resume}: the folder holds no checkpoints/last.pt to resume from; "
                          "start a new run without resume=")
    saved_file = folder / ".hydra" / "overrides.yaml"
    saved = list(OmegaConf.load(saved_file)) if saved_file.is_file() else []
    given_keys = {override_key(arg) for arg in others}
    kept = [override for override in saved if override_key(override) not in given_keys]
    return [*kept, *others, f"hydra.run.dir={folder}", "hydra.output_subdir=null"]


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_output_folder(argv: list[str]) -> None:
    """The folder the run would write under must be, or be creatable in, a writable folder."""
    if any(flag in argv for flag in ("--cfg", "-c", "--info", "--hydra-help")):
        return
    target = next((arg.split("=", 1)[1] for arg in argv if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir="))),
                  "outputs")
    existing = Path(target).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run folder {target}: {existing} is not a writable folder; "
                          "run from a writable folder or set hydra.run.dir=<a writable path>")


JOB_CONFIG_FLAGS = (["--cfg", "job", "--resolve"], ["--resolve", "--cfg", "job"], ["--cfg", "job"])


def print_job_config(argv: list[str]) -> bool:
    """Answer `rlrun --cfg job [--resolve] [overrides]` with what Hydra's app prints, without starting the app.
    False where the app must answer: other flags, overrides of Hydra's own config, and any error, which the app
    then reports in its own words."""
    flags = next((flags for flags in JOB_CONFIG_FLAGS if argv[:len(flags)] == flags), None)
    overrides = argv[len(flags):] if flags else []
    if flags is None or any(arg.startswith("-") or override_key(arg).startswith("hydra") for arg in overrides):
        return False
    try:
        cfg = compose_job_config(overrides)
        if "--resolve" in flags:
            OmegaConf.resolve(cfg)
    except Exception:
        return False
    sys.stdout.write(OmegaConf.to_yaml(cfg))
    return True


def compose_job_config(overrides: list[str]) -> DictConfig:
    """The config `--cfg job` prints, composed as Hydra composes it but without Hydra's own config, which `--cfg job`
    drops anyway: composing that part and scanning the installed Hydra plugins for it took half of the answer's time."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
    from hydra._internal.core_plugins.structured_config_source import StructuredConfigSource
    from hydra._internal.defaults_list import create_defaults_list
    from hydra._internal.sources_registry import SourcesRegistry

    for source in (ImportlibResourcesConfigSource, StructuredConfigSource):  # what the plugin scan registers
        SourcesRegistry.instance().register(source)
    search_path = ConfigSearchPathImpl()
    search_path.append("main", "pkg://rlrun.configs")
    search_path.append("schema", "structured://")
    loader = ConfigLoaderImpl(config_search_path=search_path)
    parsed_overrides, repo = loader._parse_overrides_and_create_caching_repo("config", overrides)
    loader.validate_sweep_overrides_legal(parsed_overrides, run_mode=RunMode.RUN, from_shell=True)
    defaults = create_defaults_list(repo=repo, config_name="config", overrides_list=parsed_overrides,
                                    prepend_hydra=False, skip_missing=False)
    cfg = loader._compose_config_from_defaults_list(defaults=defaults.defaults, repo=repo)
    OmegaConf.set_struct(cfg, True)
    loader._apply_overrides_to_config(defaults.config_overrides, cfg)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


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


def usage(argv: list[str]) -> str:
    """Our own --help: Hydra's also lists every Hydra group, which takes over a second."""
    groups = "\n".join(f"  {group + ':':9}{', '.join(config_names(group, argv))}"
                       for group in ("algo", "env", "network", "device"))
    lines = (importlib.resources.files("rlrun.configs") / "config.yaml").read_text().splitlines()
    first_key = next(i for i, line in enumerate(lines) if re.match(r"[a-z_]+:", line) and line != "defaults:")
    keys = lines[first_key:lines.index("hydra:")]
    return USAGE.format(groups=groups, sweeps=", ".join(config_names("sweep", argv)), keys="\n".join("  " + line for line in keys).rstrip())


@hydra.main(version_base="1.3", config_path="pkg://rlrun.configs", config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """Train one agent; or, with sweep.seeds_per_trial=N, N agents (seed, seed+1, ...) in subfolders `seed=<s>`
    and return the mean of their final eval returns, a steadier objective for a search than one run."""
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    with user_errors(), failure_recorded(job_dir):
        config = OmegaConf.to_container(cfg, resolve=True)
        check_values(config)
        if warning := replay_ratio_warning(config["algo"]):
            log.warning("warning: %s", warning)
        if cfg.sweep.seeds_per_trial == 1:
            return train(cfg, job_dir)
        seeds = range(cfg.seed, cfg.seed + cfg.sweep.seeds_per_trial)
        returns = [train(OmegaConf.merge(cfg, {"seed": seed}), job_dir / f"seed={seed}") for seed in seeds]
    mean = sum(returns) / len(returns)
    print(f"rlrun: mean final eval return over seeds {seeds[0]}-{seeds[-1]}: {mean:.2f}")
    return mean


@contextmanager
def failure_recorded(job_dir: Path) -> Iterator[None]:
    """A sweep job that raises leaves the traceback in `error.txt` in its folder (rlrun-report lists it as failed).
    A single run reports on the terminal and leaves its folder as it was (a refused resume must not mark it)."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    (job_dir / "error.txt").unlink(missing_ok=True)  # from an earlier attempt of a requeued job
    try:
        yield
    except Exception:
        (job_dir / "error.txt").write_text(traceback.format_exc())
        raise


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user mistake into one line on stderr and exit code 2 (a traceback with HYDRA_FULL_ERROR=1)."""
    try:
        yield
    except (ConfigError, MissingMandatoryValue) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(error, MissingMandatoryValue):
            error = f"{error.full_key} is required: set it on the command line ({error.full_key}=...)"
        print(f"rlrun: error: {error}", file=sys.stderr)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the launcher records this job as failed and runs the others
        raise SystemExit(2) from None


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train one agent as `cfg` says in `run_dir`, resuming from run_dir/checkpoints/last.pt when there is one;
    return the final evaluation's mean return (a sweeper's objective)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    previous = previous_checkpoint(run_dir, config)
    with garbage_collector_paused():
        import random

        import numpy as np
        import torch
        from hydra.utils import get_class, instantiate

        from rlrun.envs import make_vector_env
        from rlrun.optimality import optimality_gap_for
        from rlrun.trainer import Trainer, TrainerSettings

    algo_name = HydraConfig.get().runtime.choices["algo"]
    eval_envs = make_vector_env(cfg.env, num_envs=cfg.eval.episodes, vectorization="sync", evaluation=True,
                                max_episode_steps=cfg.eval.max_episode_steps)
    check_spaces(algo_name, get_class(cfg.algo._target_), eval_envs.single_observation_space,
                 eval_envs.single_action_space, cfg.env.id)

    torch.set_num_threads(cfg.torch_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    envs = make_vector_env(cfg.env)
    with garbage_collector_paused():  # torch.optim imports torch._dynamo as the agent builds its optimizer
        agent = instantiate(cfg.algo)(envs.single_observation_space, envs.single_action_space)

    resuming = f", resuming at step {previous['env_steps']}" if previous else ""
    print(f"rlrun: {algo_name} on {cfg.env.id}, {cfg.total_steps} steps{resuming} -> {shown(run_dir)}")
    settings = TrainerSettings(total_steps=cfg.total_steps, eval_every=cfg.eval.every,
                               checkpoint_every=cfg.checkpoint.every, log_every=cfg.log_every,
                               seed=cfg.seed, algo=algo_name, progress=cfg.progress,
                               checkpoint_keep=cfg.checkpoint.keep, save_replay=cfg.checkpoint.save_replay,
                               eval_epsilon=cfg.eval.epsilon)
    try:
        diagnose = optimality_gap_for(eval_envs.unwrapped.envs[0], agent, cfg.algo.gamma)
        summary = Trainer(agent, envs, eval_envs, run_dir, settings, config, diagnose).run(previous)
    finally:
        envs.close()
        eval_envs.close()
    final = summary["final_eval"]
    print(f"rlrun: final eval return {final['mean_return']:.2f} +- {final['std_return']:.2f} after "
          f"{summary['env_steps']} steps in {summary['wall_seconds']:.0f} s ({summary['steps_per_second']:.0f} steps/s)\n"
          f"rlrun: run folder {shown(run_dir)} (view it with: tensorboard --logdir {shown(run_dir)})")
    return final["mean_return"]


@contextmanager
def garbage_collector_paused() -> Iterator[None]:
    """Import torch with Python's cyclic garbage collector off. torch (and torch._dynamo with sympy, which
    torch.optim loads) creates ~300k long-lived objects, and the collector scans them all again each time the
    heap grows by a quarter: 0.2-0.6 s of every run's start-up spent finding no garbage. Never around making
    envs: async env workers fork from this process and would run with the collector off for good."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def previous_checkpoint(run_dir: Path, config: dict) -> dict | None:
    """The payload of run_dir/checkpoints/last.pt, if any, after checking it is a run of the same algo and env."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        return None
    from rlrun import checkpoint

    payload = checkpoint.load(path)
    saved = payload.get("config", {})
    was = (saved.get("algo", {}).get("_target_"), saved.get("env", {}).get("id"))
    wanted = (config["algo"]["_target_"], config["env"]["id"])
    if was != wanted:
        raise ConfigError(f"{path} is a checkpoint of {was[0]} on {was[1]}, but this run asks for {wanted[0]} on "
                          f"{wanted[1]}; resume with the same algo and env, or run in another folder")
    return payload


def shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
