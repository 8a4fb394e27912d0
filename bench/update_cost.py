"""What algo.compile buys: per algorithm, the time of one update eager and with algo.compile=true, and the seconds
the first compiled update takes (compiling), at each algorithm's tuned preset (network, batch, rollout size).

    python bench/update_cost.py                                  # a2c ppo dqn ddpg td3 sac
    python bench/update_cost.py --algos a2c dqn --repeats 5
    python bench/update_cost.py --algos a2c dqn --whole-runs 3   # also whole `rlrun` runs at the preset's budget

With --whole-runs N it also times N whole `rlrun algo=<algo> env=<env>` runs at the tuned preset's budget with
algo.compile=false and =true, in turns, from the command's start to its end (imports and compiling included), and
prints the medians and their final eval returns.

An update is what the algorithm does once it has its data: A2C one gradient step on a rollout, PPO all its epochs
of minibatches on a rollout, DQN one gradient step on a minibatch, DDPG, TD3 and SAC one `update` (critic, actor,
targets) on a minibatch. Eager and compiled agents are built from the same seed and timed in turns
(eager, compiled, eager, ...) `--repeats` times, each turn `--updates` updates; the medians are printed, so load on
a shared machine falls on both alike. The ratio of the two is the figure to compare between machines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import numpy as np
import torch
from omegaconf import OmegaConf

from rlrun.arguments import compose_config
from rlrun.core import Agent, Transition
from rlrun.envs import make_vector_env
from rlrun.run import build_agent

ENVS = {"a2c": "CartPole-v1", "ppo": "CartPole-v1", "dqn": "CartPole-v1", "ddpg": "Pendulum-v1",
        "td3": "Pendulum-v1", "sac": "Pendulum-v1"}
UPDATE: dict[str, Callable[[Agent], object]] = {
    "a2c": lambda agent: agent.update(), "ppo": lambda agent: agent.update(), "dqn": lambda agent: agent.learn(1),
    **{name: lambda agent: agent.update(agent.minibatch()) for name in ("ddpg", "td3", "sac")}}


def agent_with_data(algo: str, compiled: bool) -> tuple[Agent, dict]:
    """The preset's agent after enough random env steps for an update (a full rollout, or a filled minibatch)."""
    cfg = compose_config([f"algo={algo}", f"env={ENVS[algo]}", f"algo.compile={str(compiled).lower()}"], [])
    config = OmegaConf.to_container(cfg, resolve=True)
    envs = make_vector_env(cfg.env, num_envs=cfg.env.num_envs, vectorization="sync", evaluation=False)
    agent = build_agent(config, envs.single_observation_space, envs.single_action_space)
    obs, _ = envs.reset(seed=0)
    steps = config["algo"].get("n_steps", 1) if algo in ("a2c", "ppo") else 2000
    for _ in range(max(1, steps if algo in ("a2c", "ppo") else steps // envs.num_envs)):
        action = envs.action_space.sample()
        next_obs, reward, terminated, truncated, _ = envs.step(action)
        step = Transition(obs, action, reward, next_obs, terminated, truncated)
        if algo in ("a2c", "ppo"):
            agent.rollout.append(step)  # filled, not updated on: the updates are timed below
        else:
            agent.replay_buffer.add(**({"obs": obs, "action": action.reshape(len(reward), -1), "reward": reward,
                                        "next_obs": next_obs, "terminated": terminated} if algo != "dqn" else
                                       {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs,
                                        "terminated": terminated, "discount": np.full(len(reward), 0.99)}))
        obs = next_obs
    envs.close()
    return agent, config


def seconds_per_update(agent: Agent, update: Callable[[Agent], object], updates: int) -> float:
    start = time.perf_counter()
    for _ in range(updates):
        update(agent)
    return (time.perf_counter() - start) / updates


def whole_run(algo: str, compiled: bool, folder: Path) -> tuple[float, float]:
    """Wall seconds of one `rlrun` run at the preset's budget, and its final eval return."""
    rlrun = str(Path(sys.executable).parent / "rlrun")
    start = time.perf_counter()
    subprocess.run([rlrun, f"algo={algo}", f"env={ENVS[algo]}", f"algo.compile={str(compiled).lower()}",
                    "progress=false", f"hydra.run.dir={folder}"], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads((folder / "summary.json").read_text())["final_eval"]["mean_return"]


def print_whole_runs(algo: str, runs: int) -> None:
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as workdir:
        for turn in range(runs):
            for compiled in (False, True):
                results[compiled].append(whole_run(algo, compiled, Path(workdir) / f"{compiled}-{turn}"))
    eager, compiled = (median(seconds for seconds, _ in results[variant]) for variant in (False, True))
    finals = {variant: [final for _, final in results[variant]] for variant in (False, True)}
    print(f"      whole run at the preset's budget: eager {eager:.1f} s (finals {finals[False]}), compiled "
          f"{compiled:.1f} s (finals {finals[True]}), ratio {compiled / eager:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--updates", type=int, default=200, help="updates per timed turn")
    parser.add_argument("--repeats", type=int, default=3, help="turns of each variant, interleaved")
    parser.add_argument("--whole-runs", type=int, default=0, help="whole rlrun runs of each variant, interleaved")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; medians of {args.repeats} interleaved turns of {args.updates} updates")
    print(f"{'algo':5} {'env':12} {'eager ms':>9} {'compiled ms':>12} {'ratio':>6} {'compile s':>10}")
    for algo in args.algos:
        update = UPDATE[algo]
        eager, config = agent_with_data(algo, compiled=False)
        compiled, _ = agent_with_data(algo, compiled=True)
        update(eager)
        start = time.perf_counter()
        update(compiled)  # compiles
        compile_seconds = time.perf_counter() - start
        update(compiled)  # a second compilation, where the first call's graph had to change (grads now exist)
        updates = max(1, args.updates // 20) if algo == "ppo" else args.updates
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            times["eager"].append(seconds_per_update(eager, update, updates))
            times["compiled"].append(seconds_per_update(compiled, update, updates))
        eager_ms, compiled_ms = (1e3 * median(times[name]) for name in ("eager", "compiled"))
        print(f"{algo:5} {ENVS[algo]:12} {eager_ms:9.3f} {compiled_ms:12.3f} {compiled_ms / eager_ms:6.2f} "
              f"{compile_seconds:10.1f}", flush=True)
        if args.whole_runs:
            print_whole_runs(algo, args.whole_runs)


if __name__ == "__main__":
    main()
