"""Builds and trains a run from a composed config: the envs, the agent, its checkpointer and recorder, the trainer.

Used by `rlrun` (one run, or each job of a sweep) and by `rlrun-eval` (the agent alone). torch, gymnasium and
tensorboard are imported only here, when a run starts, so that `rlrun --help` and `rlrun --cfg job` answer
quickly.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import inspect
import logging
import multiprocessing
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlrun.checks import check_spaces
from rlrun.core import Agent, RunContext
from rlrun.errors import ConfigError, Interrupted
from rlrun.validation import (BOOLEAN, NON_NEGATIVE_INT, NUMBER, POSITIVE, POSITIVE_INT, UNIT_INTERVAL, check, one_of,
                              optional)

log = logging.getLogger(__name__)

RUN_RULES = {
    "seed": NON_NEGATIVE_INT, "total_steps": POSITIVE_INT, "torch_threads": POSITIVE_INT, "progress": BOOLEAN,
    "log_every": POSITIVE_INT, "log_every_seconds": POSITIVE, "eval.every": POSITIVE_INT, "eval.episodes": POSITIVE_INT,
    "eval.epsilon": UNIT_INTERVAL, "eval.max_episode_steps": optional(POSITIVE_INT),
    "eval.video_every": optional(POSITIVE_INT),
    "checkpoint.every": POSITIVE_INT, "checkpoint.keep": POSITIVE_INT, "checkpoint.save_replay": optional(BOOLEAN),
    "sweep.seeds_per_trial": POSITIVE_INT, "sweep.objective": one_of(("final_return", "early_solve")),
    "sweep.solve_threshold": optional(NUMBER), "env.num_envs": POSITIVE_INT,
    "env.max_episode_steps": optional(POSITIVE_INT), "env.normalize_rewards": BOOLEAN,
    "env.normalize_rewards_gamma": optional(UNIT_INTERVAL),
}
# what the saved agent, its envs and its random streams were built for: a resume cannot change them
FIXED_ON_RESUME = ("seed", "algo._target_", "env", "network")
LOCK_FILE = ".rlrun.lock"


def train_job(cfg: DictConfig, job_dir: Path, algo_name: str, preset: str | None, sweep: str | None = None) -> float:
    """Train one agent in `job_dir`; or, with sweep.seeds_per_trial=N, N agents (seed, seed+1, ...) in its
    subfolders `seed=<s>`, returning the mean of their objectives (sweep.objective), a steadier one for a search.
    `preset` is the tuned preset the config applied (configs/tuned/<preset>.yaml), None where there is none;
    `sweep` names the sweep the job belongs to (its runs form one group in a tracker), None for a single run."""
    config = OmegaConf.to_container(cfg, resolve=True)
    check_config(config)
    log_config_warnings(config)
    if cfg.sweep.seeds_per_trial == 1:
        return train(cfg, job_dir, algo_name, preset, sweep)
    seeds = range(cfg.seed, cfg.seed + cfg.sweep.seeds_per_trial)
    returns = [train(OmegaConf.merge(cfg, {"seed": seed}), job_dir / f"seed={seed}", algo_name, preset, sweep)
               for seed in seeds]
    mean = sum(returns) / len(returns)
    announce(f"rlrun: mean {cfg.sweep.objective} over seeds {seeds[0]}-{seeds[-1]}: {mean:.2f}")
    return mean


def algo_class(algo: Mapping[str, Any]) -> type[Agent]:
    """The Agent subclass that `algo._target_` names."""
    from hydra.utils import get_class

    target = algo.get("_target_")
    try:
        with garbage_collector_paused():  # the algorithm's module imports torch
            found = get_class(str(target))
    except (ImportError, ValueError) as error:
        raise ConfigError(f"algo._target_={target!r} cannot be loaded ({error}); name a class as module.Class, "
                          "with its module on PYTHONPATH") from error
    if not issubclass(found, Agent):
        raise ConfigError(f"algo._target_={target!r} is not an rlrun algorithm: subclass rlrun.core.Agent")
    return found


def hyperparameters(algo: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in algo.items() if key != "_target_"}


def check_config(config: dict[str, Any]) -> None:
    """The run's keys and the algorithm's hyperparameters against their rules."""
    check("", config, RUN_RULES)
    agent_class, values = algo_class(config["algo"]), hyperparameters(config["algo"])
    check("algo", values, agent_class.hyperparameter_rules)
    for problem in filter(None, (check_values(values) for check_values in agent_class.config_checks)):
        raise ConfigError(problem)
    if config["sweep"]["objective"] == "early_solve" and config["sweep"]["solve_threshold"] is None:
        raise ConfigError("sweep.objective=early_solve needs the eval return that counts as solved: set "
                          "sweep.solve_threshold=...")


def log_config_warnings(config: dict[str, Any]) -> None:
    """The algorithm's warnings about its hyperparameters, once per job."""
    agent_class, values = algo_class(config["algo"]), hyperparameters(config["algo"])
    for warning in filter(None, (make_warning(values) for make_warning in agent_class.config_warnings)):
        log.warning("warning: %s", warning)


def check_spaces_of(envs: Any, algo_name: str, config: dict[str, Any]) -> None:
    check_spaces(algo_name, algo_class(config["algo"]), envs.single_observation_space, envs.single_action_space,
                 config["env"]["id"])


def check_before_start(cfg: DictConfig, run_dir: Path, algo_name: str) -> None:
    """What a run checks as it starts, done for a single run before Hydra creates its folder, so that a refused
    start writes nothing: the config's values, the folder (free, and a checkpoint this run can go on from), the
    env (it builds, and the algorithm handles its spaces)."""
    from rlrun.envs import make_vector_env

    config = OmegaConf.to_container(cfg, resolve=True)
    check_config(config)
    check_folder_is_free(run_dir)
    if cfg.sweep.seeds_per_trial == 1:
        previous_checkpoint(run_dir, config)
    envs = make_vector_env(cfg.env, num_envs=1, vectorization="sync", evaluation=True)
    try:
        check_spaces_of(envs, algo_name, config)
    finally:
        envs.close()


def build_agent(config: dict[str, Any], observation_space: Any, action_space: Any) -> Agent:
    """The agent `config` describes, for envs with these single-env spaces: the algo class with its
    hyperparameters, and the network factory, device, seed and budget of the run."""
    from hydra.utils import instantiate

    from rlrun.networks import resolve_device

    agent_class, values = algo_class(config["algo"]), hyperparameters(config["algo"])
    context = RunContext(make_net=instantiate(config["network"], _partial_=True, _recursive_=False),
                         device=resolve_device(config["device"]["name"]), seed=config["seed"],
                         total_steps=config["total_steps"])
    try:
        inspect.signature(agent_class).bind(observation_space, action_space, context, **values)
    except TypeError as error:
        raise ConfigError(f"algo: {error}; see the keys of configs/algo/<name>.yaml") from error
    with garbage_collector_paused():  # torch.optim imports torch._dynamo as the agent builds its optimizer
        return agent_class(observation_space, action_space, context, **values)


def train(cfg: DictConfig, run_dir: Path, algo_name: str, preset: str | None, sweep: str | None = None) -> float:
    """Train one agent as `cfg` says in `run_dir`, resuming from run_dir/checkpoints/last.pt when there is one;
    return its sweep.objective (a sweeper's objective)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    with run_folder_lock(run_dir):
        return train_in_locked_folder(cfg, config, run_dir, algo_name, preset, sweep)


def train_in_locked_folder(cfg: DictConfig, config: dict[str, Any], run_dir: Path, algo_name: str,
                           preset: str | None, sweep: str | None) -> float:
    previous = previous_checkpoint(run_dir, config)
    with garbage_collector_paused():
        import random

        import numpy as np
        import torch

        from rlrun.checkpoint import Checkpointer
        from rlrun.envs import make_vector_env
        from rlrun.optimality import optimality_gap_for
        from rlrun.recording import Recorder
        from rlrun.report import solve_threshold
        from rlrun.tracking import start_tracker
        from rlrun.trainer import Trainer, TrainerSettings

    eval_envs = make_vector_env(cfg.env, num_envs=cfg.eval.episodes, vectorization="sync", evaluation=True,
                                max_episode_steps=cfg.eval.max_episode_steps)
    check_spaces_of(eval_envs, algo_name, config)
    torch.set_num_threads(cfg.torch_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    envs = make_vector_env(cfg.env)
    try:
        agent = build_agent(config, envs.single_observation_space, envs.single_action_space)
        settings = TrainerSettings(total_steps=cfg.total_steps, eval_every=cfg.eval.every,
                                   checkpoint_every=cfg.checkpoint.every, log_every=cfg.log_every, seed=cfg.seed,
                                   eval_epsilon=cfg.eval.epsilon)
        checkpointer = Checkpointer(run_dir, agent, config, keep=cfg.checkpoint.keep,
                                    save_replay=cfg.checkpoint.save_replay)
        recorder = Recorder(run_dir, config, algo_name, cfg.total_steps, progress=cfg.progress,
                            trial_id=trial_id(run_dir, sweep), solve_threshold=solve_threshold(cfg.env.id),
                            log_every_seconds=cfg.log_every_seconds)
        diagnose = optimality_gap_for(eval_envs.unwrapped.envs[0], agent)
        callbacks = evaluation_callbacks(config)
        if cfg.eval.video_every is not None:
            callbacks += (video_recorder(cfg, agent, envs, run_dir),)
        trainer = Trainer(agent, envs, eval_envs, settings, checkpointer, recorder, diagnose,
                          on_evaluation=callbacks)
        if previous:
            trainer.restore(previous)  # refuses a change the saved agent cannot take, before anything is written
            record_overrides(run_dir)
        resuming = f", resuming at step {previous['env_steps']}" if previous else ""
        with_preset = f"preset tuned/{preset}" if preset else "no tuned preset"
        announce(f"rlrun: {algo_name} on {cfg.env.id} ({with_preset}), {cfg.total_steps} steps{resuming} -> "
                 f"{shown(run_dir)}")  # after the refusals a resume can meet: rlrun.log keeps the line
        recorder.tracker = start_tracker(config["logger"], config, run_dir, sweep,
                                         resume_id=previous["recorder"].get("tracked_run_id") if previous else None,
                                         resume_step=previous["env_steps"] if previous else None)
        try:
            summary = trainer.run()
        except KeyboardInterrupt:
            go_on = (f"go on from it with: rlrun resume={shown(run_dir)}" if checkpointer.last_step is not None
                     else "start the run again to train it")
            raise Interrupted(f"interrupted at env step {trainer.progress.env_steps} (weights in "
                              f"{shown(checkpointer.folder / 'interrupted.pt')}); {checkpointer.last_good()}; "
                              f"{go_on}") from None
    finally:
        envs.close()
        eval_envs.close()
    final = summary["final_eval"]
    announce(f"rlrun: final eval return {final['mean_return']:.2f} +- {final['std_return']:.2f} after "
             f"{summary['env_steps']} steps in {summary['wall_seconds']:.0f} s "
             f"({summary['steps_per_second']:.0f} steps/s)")
    announce(f"rlrun: run folder {shown(run_dir)} (view it with: tensorboard --logdir {shown(run_dir)})")
    if cfg.sweep.objective == "early_solve":
        return early_solve_score(summary["evaluations"], cfg.sweep.solve_threshold, cfg.total_steps)
    return final["mean_return"]


def announce(line: str) -> None:
    """A line for the terminal that the run's rlrun.log (Hydra's file handler) keeps too, without a second copy
    on the console."""
    print(line, flush=True)
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def trial_id(run_dir: Path, sweep: str | None) -> str:
    """The run's name in TensorBoard's HParams dashboard: its folder below the sweep's (`algo=a2c,seed=1`,
    `3/seed=0`), or `<date>/<time>-<algo>-<env>` for a single run."""
    if sweep is not None:
        with suppress(ValueError):
            return str(run_dir.absolute().relative_to(Path(sweep).absolute()))
    return f"{run_dir.parent.name}/{run_dir.name}"


def early_solve_score(evaluations: list[dict[str, float]], threshold: float, total_steps: int) -> float:
    """sweep.objective=early_solve: where the final evaluation reaches `threshold`, 1 plus the share of the budget
    left after the first evaluation that reached it (from 1, solved at the end only, towards 2); otherwise the
    final return over the threshold (below 1 for positive thresholds), so that nearer misses still rank higher."""
    final = evaluations[-1]["mean_return"]
    if final < threshold:
        return final / abs(threshold)
    first = next(evaluation for evaluation in evaluations if evaluation["mean_return"] >= threshold)
    return 1.0 + (1.0 - first["step"] / total_steps)


def evaluation_callbacks(config: dict[str, Any]) -> tuple[Callable[[int, float], None], ...]:
    """What each evaluation is reported to besides the recorder: the Optuna trial the job runs, when its search
    prunes (rlrun.pruning)."""
    if not config["sweep"].get("trial"):
        return ()
    from rlrun.pruning import evaluation_reporter

    reporter = evaluation_reporter(config)
    return () if reporter is None else (reporter,)


def video_recorder(cfg: DictConfig, agent: Agent, envs: Any, run_dir: Path) -> Callable[[int, float], None]:
    """At the first evaluation of each eval.video_every env steps, one more deterministic episode recorded to
    <run>/videos/eval-step<N>-episode-0.mp4 and TensorBoard's eval/video, as rlrun-eval video=true records it."""
    from rlrun.envs import make_vector_env, observation_statistics, use_observation_statistics
    from rlrun.evaluate import check_video_support, record_video
    from rlrun.returns import intervals_passed
    from rlrun.trainer import derived_seed

    check_video_support()
    recorded_at = [0]
    video_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # not struct: it adds env.kwargs.render_mode

    def build(env_cfg: Any, num_envs: int, wrap: Any = None) -> Any:
        video_envs = make_vector_env(env_cfg, num_envs=num_envs, vectorization="sync", wrap=wrap, evaluation=True,
                                     max_episode_steps=cfg.eval.max_episode_steps)
        use_observation_statistics(video_envs, observation_statistics(envs))
        return video_envs

    def record(env_steps: int, _mean_return: float) -> None:
        if not intervals_passed(recorded_at[0], env_steps, cfg.eval.video_every):
            return
        recorded_at[0] = env_steps
        record_video(agent, video_cfg, env_steps, derived_seed(cfg.seed, env_steps), run_dir, build)

    return record


def previous_checkpoint(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The payload of run_dir/checkpoints/last.pt, if any, after checking that this run can go on from it: the
    same seed, algorithm, env and network, and steps left to train. Other changes (a learning rate, the budget,
    intervals) apply from the resume on."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        if (run_dir / "summary.json").exists():
            raise ConfigError(f"{shown(run_dir)} holds the summary.json of an earlier run but no checkpoints/last.pt "
                              "to resume from; run in another folder")
        return None
    from rlrun import checkpoint

    payload = checkpoint.load(path)
    saved = payload.get("config")
    if not isinstance(saved, dict) or "env_steps" not in payload:
        raise ConfigError(f"{path} is not an rlrun checkpoint (it has no config and env_steps); run in another folder")
    fixed = fixed_key_changed(saved, config)
    if fixed:
        raise ConfigError(f"{path} was written by a run with {fixed}={value_at(saved, fixed)!r}, and this run sets "
                          f"{fixed}={value_at(config, fixed)!r}, which a resume cannot change (the saved agent, envs "
                          f"and random streams are built for the old value); resume without changing {fixed}, or run "
                          "in another folder")
    done, total = payload["env_steps"], config["total_steps"]
    if total < done:
        raise ConfigError(f"total_steps={total} is below the {done} env steps {path} has done; resume with "
                          f"total_steps={done} or more")
    if total == done and (run_dir / "summary.json").exists():
        raise ConfigError(f"the run in {shown(run_dir)} is finished ({done} env steps, summary.json); resume with "
                          f"total_steps=<more than {done}> to train further")
    return payload


def fixed_key_changed(saved: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The first key of FIXED_ON_RESUME (or below one) whose value differs between a checkpoint's config and a
    run's, None when the agent, its envs and seeds are the same. A key the checkpoint's config lacks is the same
    where the run leaves it off (false or null): an option rlrun gained after the checkpoint was written, at the
    default that keeps the behaviour the checkpoint was trained with."""
    from rlrun.checkpoint import changed_keys

    changed = [key for key in changed_keys(saved, config)
               if not (lacks(saved, key) and (value_at(config, key) is None or value_at(config, key) is False))]
    return next((key for name in FIXED_ON_RESUME for key in changed if key == name or key.startswith(f"{name}.")),
                None)


def record_overrides(run_dir: Path) -> None:
    """A resume with overrides of its own: the run folder's .hydra/overrides.yaml is updated to the overrides the run
    now uses, so that the next resume and rlrun-eval compose the same config."""
    from hydra.core.hydra_config import HydraConfig

    from rlrun.checkpoint import write_text

    path = run_dir / ".hydra" / "overrides.yaml"
    if not HydraConfig.initialized() or not path.is_file():
        return
    overrides = list(HydraConfig.get().overrides.task)
    if overrides != list(OmegaConf.load(path)):
        write_text(path, OmegaConf.to_yaml(OmegaConf.create(overrides)))


def lacks(config: dict[str, Any], key: str) -> bool:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return True
        node = node[part]
    return False


def value_at(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


@contextmanager
def run_folder_lock(run_dir: Path, record: bool = True) -> Iterator[None]:
    """One run per folder: a POSIX lock on run_dir/.rlrun.lock, held while the block runs. The kernel drops it when
    the process ends in any way (a crash or kill -9 leaves no stale lock), and NFS (v4, or v3 with lockd) locks it
    for every client. While held, the file says who holds it (`record`), and a start that finds it locked is refused,
    naming them; afterwards it holds what it held before (a refused start leaves every file as it was).
    Where the file system has no locks (ENOLCK: NFS mounted with nolock) the run goes on, with a warning."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    before = os.pread(fd, 4096, 0)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                log.warning("warning: cannot lock %s (%s): make sure no other run uses this folder",
                            run_dir / LOCK_FILE, error.strerror)
            else:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
                raise ConfigError(f"{shown(run_dir)} is in use by a running rlrun ({holder}); wait for it to end, "
                                  "or run in another folder") from None
        if record:
            write_lock_file(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        try:
            yield
        finally:
            if record:
                write_lock_file(fd, before)
    finally:
        os.close(fd)


def write_lock_file(fd: int, content: bytes) -> None:
    """Who holds the lock, for the error of a second start: a note only, so a full disk does not stop the run here."""
    with suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, content, 0)


def check_folder_is_free(run_dir: Path) -> None:
    """Refuse, before anything is written, a folder where another run is training."""
    if (run_dir / LOCK_FILE).exists():
        with run_folder_lock(run_dir, record=False):
            pass


@contextmanager
def garbage_collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while torch is imported and the agent built. torch (and torch._dynamo
    with sympy, which torch.optim loads) creates hundreds of thousands of long-lived objects, and the collector
    scans them all again each time the heap grows by a quarter, finding no garbage. Never around making envs:
    async env workers fork from this process and would run with the collector off for good."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def exit_without_teardown() -> None:
    """End a process whose work is done and written (a single run, rlrun-eval) with exit code 0, skipping the
    interpreter's teardown, where torch unregisters its operators one by one. Log handlers are flushed and
    closed first; every file rlrun writes is closed by then."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def stop_idle_workers() -> None:
    """Stop the idle worker processes a finished parallel sweep leaves (joblib's), instead of waiting for each
    to tear torch down."""
    for worker in multiprocessing.active_children():
        worker.terminate()


def shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
