"""Where DDPG's training time goes: CPU time per gradient step (critic step, actor step, target update)
of Stable-Baselines3's DDPG and of rlrun's, at rl-zoo3's Pendulum-v1 size (400x300, batch 256) and at
rlrun's tuned size (64x64), with each of rlrun's speed-ups undone in turn.

Run it in an environment with the `bench` extra:  python bench/ddpg_step_cost.py [--threads 1 2]

Thread CPU time (time.thread_time) is reported, so other processes on a shared machine affect the
figures less than they would wall time; with --threads 2 the figures are wall seconds instead, since
torch's extra threads do not count in the calling thread's CPU time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import numpy as np
import torch

from rlrun.algos.ddpg import DDPG
from rlrun.core import RunContext
from rlrun.networks import network


def milliseconds_per_call(fn: Callable[[], object], clock: Callable[[], float], calls: int = 300) -> float:
    for _ in range(20):
        fn()
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls * 1e3


def sb3_ddpg(env: gym.Env):
    from stable_baselines3 import DDPG as SB3DDPG
    from stable_baselines3.common.noise import NormalActionNoise

    model = SB3DDPG("MlpPolicy", env, gamma=0.98, buffer_size=200_000, learning_starts=0, learning_rate=1e-3,
                    action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
                    policy_kwargs={"net_arch": [400, 300]}, device="cpu", seed=0)
    model.learn(1000)  # fills the buffer (and trains)
    return model


def rlrun_ddpg(env: gym.Env, hidden_sizes: list[int]) -> DDPG:
    context = RunContext(make_net=partial(network, hidden_sizes=hidden_sizes, activation="relu"),
                         device=torch.device("cpu"), seed=0, total_steps=1000)
    agent = DDPG(env.observation_space, env.action_space, context, learning_starts=0, batch_size=256)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        obs = rng.standard_normal((1, 3)).astype(np.float32)
        agent.replay_buffer.add(obs=obs, action=rng.uniform(-2, 2, (1, 1)).astype(np.float32), reward=np.zeros(1, np.float32),
                         next_obs=obs, terminated=np.zeros(1, np.float32))
    return agent


def undo(agent: DDPG, change: str) -> DDPG:
    """Take back one of the speed-ups of rlrun.algos.ddpg."""
    if change == "Adam not fused (foreach)":
        agent.actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=1e-3, foreach=True)
        agent.critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-3, foreach=True)
    elif change == "actor step also computes critic gradients":
        agent.actor_loss = lambda obs: -agent.critic(obs, agent.actor(obs)).mean()
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    args = parser.parse_args()
    env = gym.make("Pendulum-v1")
    obs = np.zeros((1, 3), np.float32)
    for threads in args.threads:
        torch.set_num_threads(threads)
        clock = time.thread_time if threads == 1 else time.perf_counter
        print(f"\ntorch threads {threads} ({'thread CPU' if threads == 1 else 'wall'} ms per call)")
        model = sb3_ddpg(env)
        print(f"  SB3 DDPG 400x300 batch 256: gradient step {milliseconds_per_call(lambda: model.train(1, 256), clock):6.2f}"
              f", act {milliseconds_per_call(lambda: model.predict(obs), clock, 1000):.3f}")
        for hidden_sizes in ([400, 300], [64, 64]):
            for change in ("", "Adam not fused (foreach)", "actor step also computes critic gradients"):
                agent = undo(rlrun_ddpg(env, hidden_sizes), change)
                step = milliseconds_per_call(lambda: agent.update(agent.minibatch()), clock)
                label = f"rlrun DDPG {'x'.join(map(str, hidden_sizes))} batch 256{': ' + change if change else ''}"
                act = f", act {milliseconds_per_call(lambda: agent.act(obs), clock, 1000):.3f}" if not change else ""
                print(f"  {label}: gradient step {step:6.2f}{act}")


if __name__ == "__main__":
    main()
