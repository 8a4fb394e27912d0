"""Env steps per second of Q-learning on Taxi-v4 through rlrun's trainer, next to the raw step rate of
the same vector env with random actions, measured in the same process.

    python bench/tabular_throughput.py [--num-envs 8] [--steps 400000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from rlrun.algos.qlearning import QLearning
from rlrun.envs import make_vector_env
from rlrun.trainer import Trainer, TrainerSettings


def raw_steps_per_second(env_cfg, steps: int) -> float:
    """gymnasium's SyncVectorEnv alone (no rlrun wrappers), random actions drawn up front."""
    envs = make_vector_env(env_cfg).unwrapped
    actions = np.random.default_rng(0).integers(envs.single_action_space.n, size=(steps // envs.num_envs + 1, envs.num_envs))
    envs.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    return len(actions) * envs.num_envs / (time.perf_counter() - start)


def rlrun_steps_per_second(env_cfg, steps: int) -> float:
    """Q-learning trained by rlrun's Trainer; evaluation and checkpoints pushed past the end."""
    envs = make_vector_env(env_cfg)
    agent = QLearning(envs.single_observation_space, envs.single_action_space,
                      epsilon={"schedule": "linear", "start": 1.0, "end": 0.05, "decay_steps": steps // 2})
    settings = TrainerSettings(total_steps=steps, eval_every=10 * steps, checkpoint_every=10 * steps,
                               log_every=1000, seed=0, algo="qlearning", progress=False)
    config = {"seed": 0, "total_steps": steps, "algo": {}, "env": dict(env_cfg), "network": {}}
    with tempfile.TemporaryDirectory() as run_dir:
        summary = Trainer(agent, envs, make_vector_env(env_cfg, num_envs=1), run_dir, settings, config).run()
    return summary["steps_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env_cfg = OmegaConf.create({"id": "Taxi-v4", "num_envs": args.num_envs, "vectorization": "sync",
                                "max_episode_steps": None, "kwargs": {}})
    raw = raw_steps_per_second(env_cfg, args.steps)
    trained = rlrun_steps_per_second(env_cfg, args.steps)
    print(f"Taxi-v4, {args.num_envs} sync envs, {args.steps} env steps")
    print(f"{'raw vector env, random actions':34s} {raw:10,.0f} steps/s")
    print(f"{'rlrun Q-learning (trainer loop)':34s} {trained:10,.0f} steps/s   {trained / raw:.0%} of raw")


if __name__ == "__main__":
    main()
