"""rlrun's tuned DQN, A2C, PPO, DDPG, TD3 and SAC against Stable-Baselines3 with rl-zoo3's tuned hyperparameters, in one run.

Run it in an environment with the `bench` extra (`pip install -e ".[bench]"`):

    python bench/compare_sb3.py                      # CartPole-v1, DQN and A2C, seeds 0 1 2
    python bench/compare_sb3.py --algos a2c --seeds 0
    python bench/compare_sb3.py --jobs 3            # each system's three seeds side by side
    python bench/compare_sb3.py --env Pendulum-v1 --algos ddpg --threshold -200 --systems rlrun sb3 cleanrl
    python bench/compare_sb3.py --algos ppo --systems rlrun sb3 cleanrl
    python bench/compare_sb3.py --env Pendulum-v1 --algos td3 sac --threshold -200 --systems rlrun sb3 cleanrl
    python bench/compare_sb3.py --algos a2c --systems rlrun --rlrun-overrides env.num_envs=32 algo.lr=0.004

Both systems use the same evaluation protocol: 10 deterministic episodes, side by side on 10 envs,
every 5,000 env steps and at the end. rlrun runs its `rlrun` command with the tuned preset; SB3 runs
with the hyperparameters read from rl-zoo3's hyperparams/<algo>.yml (on VecNormalize where the zoo normalizes,
evaluated with the training statistics frozen). Printed per system and algo
(median over seeds): env steps and wall seconds (training plus evaluations, from the start of
training) to the first evaluation >= the threshold, the final evaluation return, and training
steps per second (evaluations excluded). For A2C it also measures, right after each run in the same
worker, the raw step rate of the vector env (same env and num_envs as the preset, random actions) that
bounds A2C's training throughput, and prints the training rate as a share of it.
The `cleanrl` system is rlrun with CleanRL's default hyperparameters for the algorithm (CLEANRL below).
--rlrun-overrides changes the `rlrun` system's preset (a candidate preset, measured the same way).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np
import yaml

EVAL_EVERY = 5000
EVAL_EPISODES = 10
RLRUN = str(Path(sys.executable).parent / "rlrun")
# CleanRL's defaults, run by rlrun: ddpg_continuous_action.py and td3_continuous_action.py (256x256 ReLU, lr 3e-4,
# exploration noise 0.1; TD3: policy_frequency 2, policy_noise 0.2, noise_clip 0.5) with learning_starts rl-zoo3's
# 10k, as CleanRL's 25k random steps would use the whole 20k budget (CleanRL's DDPG also delays its actor updates,
# policy_frequency 2, which rlrun's plain DDPG does not); sac_continuous_action.py (256x256 ReLU, policy lr 3e-4,
# Q and temperature lr 1e-3, learned temperature from 1, 5k random steps; its actor steps twice every second
# step, rlrun's once a step); ppo.py (its CartPole-v1 run: 4 envs, 128-step rollouts, 4 minibatches, 4 epochs, value
# clipping, entropy 0.01, Adam at 2.5e-4 annealed over its 500k steps; its vf_coef 0.5 is value_coef 0.25 in rlrun)
OFF_POLICY = ["algo.gamma=0.99", "algo.tau=0.005", "algo.batch_size=256", "algo.buffer_size=1000000",
              "network.hidden_sizes=[256,256]", "network.activation=relu"]
CLEANRL = {"ddpg": [*OFF_POLICY, "algo.actor_lr=3e-4", "algo.critic_lr=3e-4", "algo.exploration_noise=0.1",
                    "algo.learning_starts=10000"],
           "td3": [*OFF_POLICY, "algo.actor_lr=3e-4", "algo.critic_lr=3e-4", "algo.exploration_noise=0.1",
                   "algo.learning_starts=10000", "algo.policy_delay=2", "algo.target_noise=0.2",
                   "algo.target_noise_clip=0.5"],
           "sac": [*OFF_POLICY, "algo.actor_lr=3e-4", "algo.critic_lr=1e-3", "algo.alpha_lr=1e-3", "algo.alpha=1.0",
                   "algo.autotune=true", "algo.learning_starts=5000"],
           "ppo": ["env.num_envs=4", "algo.n_steps=128", "algo.num_minibatches=4", "algo.update_epochs=4",
                   "algo.gamma=0.99", "algo.gae_lambda=0.95", "algo.clip_range=0.2", "algo.value_clip_range=0.2",
                   "algo.entropy_coef=0.01", "algo.value_coef=0.25", "algo.max_grad_norm=0.5", "algo.lr=2.5e-4",
                   "algo.lr_schedule=linear", "total_steps=500000"]}


def first_solve(evaluations: list[dict], threshold: float) -> dict | None:
    return next((e for e in evaluations if e["mean_return"] >= threshold), None)


def run_rlrun(algo: str, env_id: str, seed: int, workdir: Path, system: str = "rlrun",
              preset_overrides: tuple[str, ...] = ()) -> dict:
    """One `rlrun` run with the tuned preset, changed by `preset_overrides` (system=rlrun) or by CleanRL's defaults
    (system=cleanrl); eval times are read from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = CLEANRL[algo] if system == "cleanrl" else list(preset_overrides)
    run_dir = workdir / f"{system}-{algo}-{seed}"
    result = subprocess.run([RLRUN, f"algo={algo}", f"env={env_id}", f"seed={seed}", f"eval.every={EVAL_EVERY}",
                             f"eval.episodes={EVAL_EPISODES}", "progress=false", f"hydra.run.dir={run_dir}",
                             *overrides], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    summary = json.loads((run_dir / "summary.json").read_text())
    events = EventAccumulator(str(run_dir))
    events.Reload()
    start = events.Tensors("config/text_summary")[0].wall_time  # written as training starts
    seconds = {event.step: event.wall_time - start for event in events.Scalars("eval/mean_return")}
    evaluations = [{**e, "seconds": seconds[e["step"]]} for e in summary["evaluations"]]
    num_envs = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["env"]["num_envs"]
    run = {"evaluations": evaluations, "steps_per_second": summary["steps_per_second"], "num_envs": num_envs}
    if (algo, system) == ("a2c", "rlrun"):  # the yardstick of its printed throughput, right after the run
        run["raw_rate"] = raw_vector_env_rate(env_id, num_envs)
    return run


def zoo_hyperparams(algo: str, env_id: str) -> dict:
    """rl-zoo3's tuned hyperparameters for algo on env_id, as keyword arguments of the SB3 class, and its
    `normalize` entry (VecNormalize's settings; popped by run_sb3)."""
    from rl_zoo3.utils import linear_schedule
    from torch import nn

    path = importlib.resources.files("rl_zoo3") / "hyperparams" / f"{algo}.yml"
    params = dict(yaml.load(path.read_text(), Loader=yaml.UnsafeLoader)[env_id])  # the zoo's own !!float tags
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("lin_"):
            params[key] = linear_schedule(float(value[4:]))
    if isinstance(params.get("policy_kwargs"), str):
        params["policy_kwargs"] = eval(params["policy_kwargs"], {"dict": dict, "nn": nn})  # the zoo's format
    if "noise_type" in params:  # the zoo's keys for the action noise of DDPG, TD3 and SAC
        params["action_noise"] = action_noise(params.pop("noise_type"), params.pop("noise_std"), env_id)
    return params


def vec_normalize_settings(normalize: bool | str, params: dict) -> dict | None:
    """VecNormalize's keyword arguments from rl-zoo3's `normalize` entry (true, or a dict written as a string),
    with the discount of the normalized returns set to the algorithm's gamma, as rl-zoo3's ExperimentManager does;
    None where the entry asks for no normalization."""
    if not normalize:
        return None
    settings = eval(normalize, {}) if isinstance(normalize, str) else {}  # the zoo's format
    return {**settings, **({"gamma": params["gamma"]} if "gamma" in params else {})}


def action_noise(noise_type: str, std: float, env_id: str):
    """SB3's action noise as rl-zoo3 builds it from noise_type and noise_std."""
    import gymnasium as gym
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    dims = gym.make(env_id).action_space.shape[0]
    noise = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}[noise_type]
    return noise(mean=np.zeros(dims), sigma=std * np.ones(dims))


def run_sb3(algo: str, env_id: str, seed: int, max_steps: int | None = None) -> dict:
    import stable_baselines3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

    params = zoo_hyperparams(algo, env_id)
    total_steps, num_envs = int(params.pop("n_timesteps")), int(params.pop("n_envs", 1))
    total_steps = min(total_steps, max_steps or total_steps)
    envs = make_vec_env(env_id, n_envs=num_envs, seed=seed)
    eval_envs = make_vec_env(env_id, n_envs=EVAL_EPISODES, seed=seed + 10_000)
    normalize = vec_normalize_settings(params.pop("normalize", False), params)
    if normalize is not None:  # as rl-zoo3 does: train on VecNormalize, evaluate with its frozen statistics
        envs = VecNormalize(envs, **normalize)
        eval_envs = VecNormalize(eval_envs, training=False, norm_obs=normalize.get("norm_obs", True), norm_reward=False)
    model = getattr(stable_baselines3, algo.upper())(env=envs, seed=seed, device="cpu", **params)

    class Evaluate(BaseCallback):
        def __init__(self):
            super().__init__()
            self.evaluations, self.eval_seconds, self.start = [], 0.0, time.perf_counter()

        def evaluate(self):
            began = time.perf_counter()
            if normalize is not None:
                sync_envs_normalization(envs, eval_envs)
            returns, _ = evaluate_policy(self.model, eval_envs, n_eval_episodes=EVAL_EPISODES, deterministic=True,
                                         return_episode_rewards=True)
            self.eval_seconds += time.perf_counter() - began
            self.evaluations.append({"step": self.num_timesteps, "mean_return": float(np.mean(returns)),
                                     "seconds": time.perf_counter() - self.start})

        def _on_step(self) -> bool:
            if self.num_timesteps // EVAL_EVERY > (self.num_timesteps - num_envs) // EVAL_EVERY:
                self.evaluate()
            return True

    callback = Evaluate()
    model.learn(total_timesteps=total_steps, callback=callback)
    if callback.evaluations[-1]["step"] != model.num_timesteps:
        callback.evaluate()
    train_seconds = time.perf_counter() - callback.start - callback.eval_seconds
    return {"evaluations": callback.evaluations, "steps_per_second": model.num_timesteps / train_seconds,
            "num_envs": num_envs}


def raw_vector_env_rate(env_id: str, num_envs: int, steps: int = 20_000, repeats: int = 5) -> float:
    """Env steps per second of rlrun's vector env (same wrappers as training) under random actions: the median
    of `repeats` measurements, as one short measurement on a shared machine is noisy."""
    from omegaconf import OmegaConf

    from rlrun.envs import make_vector_env

    cfg = OmegaConf.create({"id": env_id, "num_envs": num_envs, "vectorization": "sync", "max_episode_steps": None,
                            "kwargs": {}})
    envs = make_vector_env(cfg)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(256)]
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        for i in range(steps // num_envs):
            envs.step(actions[i % len(actions)])
        rates.append((steps // num_envs) * num_envs / (time.perf_counter() - began))
    return median(rates)


def summarize(runs: list[dict], threshold: float) -> dict:
    solves = [first_solve(run["evaluations"], threshold) for run in runs]
    solved = [s for s in solves if s is not None]
    return {
        "solved": f"{len(solved)}/{len(runs)}",
        "steps": median(s["step"] for s in solved) if solved else None,
        "seconds": median(s["seconds"] for s in solved) if solved else None,
        "final": median(run["evaluations"][-1]["mean_return"] for run in runs),
        "finals": [run["evaluations"][-1]["mean_return"] for run in runs],
        "sps": median(run["steps_per_second"] for run in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--algos", nargs="+", default=["dqn", "a2c"])
    parser.add_argument("--systems", nargs="+", default=["rlrun", "sb3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs side by side, both systems' at once (wall times grow with the sharing)")
    parser.add_argument("--sb3-max-steps", type=int, help="cut SB3's budget (rl-zoo3's n_timesteps) to this many steps")
    parser.add_argument("--out", type=Path, help="write every run's evaluations here as JSON")
    parser.add_argument("--rlrun-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="rlrun overrides for the rlrun system's runs, e.g. algo.lr=0.004 (a candidate preset)")
    args = parser.parse_args()
    if "cleanrl" in args.systems and not set(args.algos) <= set(CLEANRL):
        parser.error(f"--systems cleanrl: CleanRL defaults are here for {', '.join(CLEANRL)} only")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)  # as rlrun's torch_threads default

    results: dict = {}
    with tempfile.TemporaryDirectory() as workdir, ProcessPoolExecutor(args.jobs) as pool:
        futures = {(algo, system): [pool.submit(run_sb3, algo, args.env, seed, args.sb3_max_steps) if system == "sb3"
                                    else pool.submit(run_rlrun, algo, args.env, seed, Path(workdir), system,
                                                     tuple(args.rlrun_overrides))
                                    for seed in args.seeds]
                   for algo in args.algos for system in args.systems}  # all submitted: --jobs runs share the CPU
        for (algo, system), jobs in futures.items():
            runs = [job.result() for job in jobs]
            for seed, run in zip(args.seeds, runs):
                trace = " ".join(f"{e['mean_return']:.0f}" for e in run["evaluations"])
                print(f"{system} {algo} seed {seed}: {run['steps_per_second']:.0f} steps/s; evals: {trace}", flush=True)
            results[(algo, system)] = (runs, summarize(runs, args.threshold))

    print(f"\n{args.env}, threshold {args.threshold:g}, eval {EVAL_EPISODES} deterministic episodes every "
          f"{EVAL_EVERY} env steps, seeds {' '.join(map(str, args.seeds))} (medians; first-solve medians over "
          "the seeds that solved)" + (f"; rlrun with {' '.join(args.rlrun_overrides)}" if args.rlrun_overrides else "")
          + "\n")
    header = ("algo", "env", "system", "solved", "steps to first solve", "wall s to first solve",
              "final eval (each seed)", "train steps/s")
    rows = []
    for (algo, system), (_, s) in results.items():
        rows.append((algo, args.env, system, s["solved"], "-" if s["steps"] is None else f"{s['steps']:.0f}",
                     "-" if s["seconds"] is None else f"{s['seconds']:.1f}",
                     f"{s['final']:.1f} ({', '.join(f'{f:.0f}' for f in s['finals'])})", f"{s['sps']:.0f}"))
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + " |")

    if ("a2c", "rlrun") in results:
        runs, _ = results[("a2c", "rlrun")]
        shares = [run["steps_per_second"] / run["raw_rate"] for run in runs]
        print(f"\nA2C throughput: median {100 * median(shares):.0f}% of the raw vector-env rate (each seed: "
              + ", ".join(f"{run['steps_per_second']:.0f} / {run['raw_rate']:.0f} = {100 * share:.0f}%"
                          for run, share in zip(runs, shares))
              + f" steps/s; raw: {runs[0]['num_envs']} envs, random actions, measured right after each run)")
    if args.out:
        args.out.write_text(json.dumps({f"{a}/{sy}": runs for (a, sy), (runs, _) in results.items()}, indent=1))


if __name__ == "__main__":
    main()
