"""rlrun's tuned DQN and A2C against Stable-Baselines3 with rl-zoo3's tuned hyperparameters, in one run.

Run it in an environment with the `bench` extra (`pip install -e ".[bench]"`):

    python bench/compare_sb3.py                      # CartPole-v1, DQN and A2C, seeds 0 1 2
    python bench/compare_sb3.py --algos a2c --seeds 0

Both systems use the same evaluation protocol: 10 deterministic episodes, side by side on 10 envs,
every 5,000 env steps and at the end. rlrun runs its `rlrun` command with the tuned preset; SB3 runs
with the hyperparameters read from rl-zoo3's hyperparams/<algo>.yml. Printed per system and algo
(median over seeds): env steps and wall seconds (training plus evaluations, from the start of
training) to the first evaluation >= the threshold, the final evaluation return, and training
steps per second (evaluations excluded). For A2C it also measures the raw step rate of the vector
env (same env and num_envs as the preset, random actions) that bounds A2C's training throughput.
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
from pathlib import Path
from statistics import median

import numpy as np
import yaml

EVAL_EVERY = 5000
EVAL_EPISODES = 10
RLRUN = str(Path(sys.executable).parent / "rlrun")


def first_solve(evaluations: list[dict], threshold: float) -> dict | None:
    return next((e for e in evaluations if e["mean_return"] >= threshold), None)


def run_rlrun(algo: str, env_id: str, seed: int, workdir: Path) -> dict:
    """One `rlrun` run with the tuned preset; eval times are read from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = workdir / f"rlrun-{algo}-{seed}"
    result = subprocess.run([RLRUN, f"algo={algo}", f"env={env_id}", f"seed={seed}", f"eval.every={EVAL_EVERY}",
                             f"eval.episodes={EVAL_EPISODES}", "progress=false", f"hydra.run.dir={run_dir}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    summary = json.loads((run_dir / "summary.json").read_text())
    events = EventAccumulator(str(run_dir))
    events.Reload()
    start = events.Tensors("config/text_summary")[0].wall_time  # written as training starts
    seconds = {event.step: event.wall_time - start for event in events.Scalars("eval/mean_return")}
    evaluations = [{**e, "seconds": seconds[e["step"]]} for e in summary["evaluations"]]
    return {"evaluations": evaluations, "steps_per_second": summary["steps_per_second"],
            "num_envs": yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["env"]["num_envs"]}


def zoo_hyperparams(algo: str, env_id: str) -> dict:
    """rl-zoo3's tuned hyperparameters for algo on env_id, as keyword arguments of the SB3 class."""
    from rl_zoo3.utils import linear_schedule
    from torch import nn

    path = importlib.resources.files("rl_zoo3") / "hyperparams" / f"{algo}.yml"
    params = dict(yaml.load(path.read_text(), Loader=yaml.UnsafeLoader)[env_id])  # the zoo's own !!float tags
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("lin_"):
            params[key] = linear_schedule(float(value[4:]))
    if isinstance(params.get("policy_kwargs"), str):
        params["policy_kwargs"] = eval(params["policy_kwargs"], {"dict": dict, "nn": nn})  # the zoo's format
    if params.pop("normalize", False):
        raise NotImplementedError(f"rl-zoo3 normalizes {env_id} for {algo}; this bench does not wrap VecNormalize")
    return params


def run_sb3(algo: str, env_id: str, seed: int) -> dict:
    import stable_baselines3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    params = zoo_hyperparams(algo, env_id)
    total_steps, num_envs = int(params.pop("n_timesteps")), int(params.pop("n_envs", 1))
    envs = make_vec_env(env_id, n_envs=num_envs, seed=seed)
    eval_envs = make_vec_env(env_id, n_envs=EVAL_EPISODES, seed=seed + 10_000)
    model = getattr(stable_baselines3, algo.upper())(env=envs, seed=seed, device="cpu", **params)

    class Evaluate(BaseCallback):
        def __init__(self):
            super().__init__()
            self.evaluations, self.eval_seconds, self.start = [], 0.0, time.perf_counter()

        def evaluate(self):
            began = time.perf_counter()
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


def raw_vector_env_rate(env_id: str, num_envs: int, steps: int = 20_000) -> float:
    """Env steps per second of rlrun's vector env (same wrappers as training) under random actions."""
    from omegaconf import OmegaConf

    from rlrun.envs import make_vector_env

    cfg = OmegaConf.create({"id": env_id, "num_envs": num_envs, "vectorization": "sync", "max_episode_steps": None,
                            "kwargs": {}})
    envs = make_vector_env(cfg)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(256)]
    began = time.perf_counter()
    for i in range(steps // num_envs):
        envs.step(actions[i % len(actions)])
    return (steps // num_envs) * num_envs / (time.perf_counter() - began)


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
    parser.add_argument("--out", type=Path, help="write every run's evaluations here as JSON")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)  # as rlrun's torch_threads default

    results: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        for algo in args.algos:
            for system in args.systems:
                runs = []
                for seed in args.seeds:
                    run = run_rlrun(algo, args.env, seed, Path(workdir)) if system == "rlrun" else \
                        run_sb3(algo, args.env, seed)
                    trace = " ".join(f"{e['mean_return']:.0f}" for e in run["evaluations"])
                    print(f"{system} {algo} seed {seed}: {run['steps_per_second']:.0f} steps/s; evals: {trace}",
                          flush=True)
                    runs.append(run)
                results[(algo, system)] = (runs, summarize(runs, args.threshold))

    print(f"\n{args.env}, threshold {args.threshold:g}, eval {EVAL_EPISODES} deterministic episodes every "
          f"{EVAL_EVERY} env steps, seeds {' '.join(map(str, args.seeds))} (medians; first-solve medians over "
          "the seeds that solved)\n")
    header = ("algo", "system", "solved", "steps to first solve", "wall s to first solve", "final eval (each seed)",
              "train steps/s")
    rows = []
    for (algo, system), (_, s) in results.items():
        rows.append((algo, system, s["solved"], "-" if s["steps"] is None else f"{s['steps']:.0f}",
                     "-" if s["seconds"] is None else f"{s['seconds']:.1f}",
                     f"{s['final']:.1f} ({', '.join(f'{f:.0f}' for f in s['finals'])})", f"{s['sps']:.0f}"))
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + " |")

    if ("a2c", "rlrun") in results:
        runs, s = results[("a2c", "rlrun")]
        raw = raw_vector_env_rate(args.env, runs[0]["num_envs"])
        print(f"\nA2C throughput: {s['sps']:.0f} training steps/s = {100 * s['sps'] / raw:.0f}% of the raw "
              f"vector-env rate ({raw:.0f} steps/s, {runs[0]['num_envs']} envs, random actions)")
    if args.out:
        args.out.write_text(json.dumps({f"{a}/{sy}": runs for (a, sy), (runs, _) in results.items()}, indent=1))


if __name__ == "__main__":
    main()
