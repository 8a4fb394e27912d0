"""Parallel sweep speed-up: the same 2 jobs run one after another, then side by side with the joblib launcher.

    python bench/parallel_sweep.py                       # 2 REINFORCE CartPole-v1 runs, 100k steps each
    python bench/parallel_sweep.py --torch-threads 2     # oversubscribed: 2 jobs x 2 torch threads on 2 cores
    python bench/parallel_sweep.py --repeats 3           # 3 pairs of sweeps, alternating; the median ratio

Each job sets torch.set_num_threads(torch_threads) (1 by default), so N joblib workers on N cores do not
fight over the cores; the bar is a parallel wall time <= 0.55x the sequential one. Both times are the whole
`rlrun -m` command (start-up and the joblib workers' imports included). The machine must be otherwise
idle: the script prints the load average before and after, and another process on the cores skews both.

The ratio is (F_side + J_side) / (F_seq + 2 J_alone), and the script prints each part: the jobs' own
seconds (Trainer.run, from summary.json) alone and side by side, and the fixed cost F around them
(start-up, imports, worker processes), so a miss shows whether the jobs slowed down side by side or
the fixed cost outweighed them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

RLRUN = str(Path(sys.executable).parent / "rlrun")


def sweep(launcher: str, args: argparse.Namespace, workdir: Path) -> tuple[float, list[dict]]:
    """Wall seconds of one `rlrun -m seed=0,1 ...` with `launcher`, and its jobs' summaries."""
    folder = workdir / launcher
    command = [RLRUN, "-m", "seed=0,1", f"hydra/launcher={launcher}", f"hydra.sweep.dir={folder}",
               f"algo={args.algo}", f"env={args.env}", f"total_steps={args.total_steps}",
               f"torch_threads={args.torch_threads}"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=workdir)
    seconds = time.perf_counter() - start
    return seconds, [json.loads(path.read_text()) for path in sorted(folder.glob("*/summary.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="reinforce")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of sweeps (basic, then joblib)")
    args = parser.parse_args()

    print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    ratios = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            sequential, sequential_jobs = sweep("basic", args, Path(tmp))
            parallel, parallel_jobs = sweep("joblib", args, Path(tmp))
        alone = [job["wall_seconds"] for job in sequential_jobs]
        side = [job["wall_seconds"] for job in parallel_jobs]
        print(f"\npair {repeat + 1}, load average {os.getloadavg()[0]:.2f}")
        for name, seconds, jobs in (("one after another (basic)", sequential, sequential_jobs),
                                    ("side by side (joblib)", parallel, parallel_jobs)):
            per_job = ", ".join(f"{job['wall_seconds']:.1f} s at {job['steps_per_second']:.0f} steps/s" for job in jobs)
            print(f"{name:27} {seconds:6.1f} s   jobs: {per_job}")
        print(f"fixed cost: {sequential - sum(alone):.1f} s one after another, {parallel - max(side):.1f} s side by side; "
              f"jobs side by side take {sum(side) / sum(alone):.2f}x their time alone")
        ratios.append(parallel / sequential)
        print(f"parallel / sequential = {ratios[-1]:.2f}")
    ratio = median(ratios)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print(f"parallel / sequential, median of {len(ratios)}: {ratio:.2f} (bar: <= 0.55) {'PASS' if ratio <= 0.55 else 'FAIL'}")


if __name__ == "__main__":
    main()
