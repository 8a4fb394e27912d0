"""Raw step rate of rlrun's preprocessed Atari training envs (env=atari: noop starts, frame skip 4, 84x84
grayscale, life loss, reward clipping, 4-frame stacks) with random actions and no agent: the ceiling for
rlrun's training steps/s on these games. One sync env, then `--num-envs` async envs (one process each).

    python bench/atari_env_rate.py [--games ALE/Pong-v5 ALE/Breakout-v5] [--num-envs 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from hydra import compose, initialize_config_module

from rlrun.envs import make_vector_env


def steps_per_second(env_cfg, num_envs: int, vectorization: str, seconds: float) -> float:
    envs = make_vector_env(env_cfg, num_envs=num_envs, vectorization=vectorization)
    rng = np.random.default_rng(0)
    envs.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in rng.integers(envs.single_action_space.n, size=(100, num_envs)):
            envs.step(action)
        steps += 100 * num_envs
    rate = steps / (time.perf_counter() - start)
    envs.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["ALE/Pong-v5", "ALE/Breakout-v5"])
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per game and setting")
    args = parser.parse_args()
    print(f"{'game':18s} {'envs':>12s} {'env steps/s':>12s} {'frames/s':>10s}")
    for game in args.games:
        with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
            env_cfg = compose("config", overrides=["env=atari", f"env.id={game}"]).env
        for num_envs, vectorization in ((1, "sync"), (args.num_envs, "async")):
            rate = steps_per_second(env_cfg, num_envs, vectorization, args.seconds)
            frames = env_cfg.atari.frame_skip * rate
            print(f"{game:18s} {f'{num_envs} {vectorization}':>12s} {rate:12,.0f} {frames:10,.0f}")


if __name__ == "__main__":
    main()
