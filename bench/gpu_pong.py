"""DQN and A2C on ALE/Pong-v5 for a fixed budget with device=cuda and device=cpu, eager and with algo.compile=true:
training steps per second and the GPU's busy share, one run each, one after another.

    pip install -e ".[atari]" && python bench/gpu_pong.py            # on a machine with a CUDA GPU; never in CI
    python bench/gpu_pong.py --steps 20000 --algos dqn

Each run is `rlrun algo=<algo> env=atari env.id=ALE/Pong-v5 total_steps=<steps>` with the tuned Atari preset (DQN's
learning_starts lowered to a tenth of the budget, so that most of it trains), no evaluation before the end. While a
CUDA run trains, `nvidia-smi` is sampled every 0.5 s; the GPU's share is the mean of its utilization.gpu samples.
Prints one line per run; the figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import mean

RLRUN = str(Path(sys.executable).parent / "rlrun")


def sample_gpu_utilization(samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            samples.append(float(out.stdout.split()[0]))


def run(algo: str, device: str, compiled: bool, steps: int, folder: Path) -> dict:
    overrides = [f"algo={algo}", "env=atari", "env.id=ALE/Pong-v5", f"total_steps={steps}", f"device={device}",
                 f"algo.compile={str(compiled).lower()}", f"eval.every={steps}", "eval.episodes=1",
                 f"checkpoint.every={steps}", "progress=false", f"hydra.run.dir={folder}",
                 *([f"algo.learning_starts={steps // 10}"] if algo == "dqn" else [])]
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_gpu_utilization, args=(samples, stop), daemon=True)
    if device == "cuda":
        sampler.start()
    start = time.perf_counter()
    subprocess.run([RLRUN, *overrides], check=True)
    wall = time.perf_counter() - start
    stop.set()
    summary = json.loads((folder / "summary.json").read_text())
    return {"steps_per_second": summary["steps_per_second"], "wall_seconds": wall,
            "gpu_share": mean(samples) / 100 if samples else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", default=["dqn", "a2c"])
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        for algo in args.algos:
            for device, compiled in (("cpu", False), ("cuda", False), ("cuda", True)):
                result = run(algo, device, compiled, args.steps, Path(workdir) / f"{algo}-{device}-{compiled}")
                share = "-" if result["gpu_share"] is None else f"{100 * result['gpu_share']:.0f}%"
                print(f"{algo} Pong {args.steps} steps, device={device}, compile={compiled}: "
                      f"{result['steps_per_second']:.0f} steps/s, {result['wall_seconds']:.0f} s wall, GPU busy {share}",
                      flush=True)


if __name__ == "__main__":
    main()
