"""Wall seconds of `rlrun --help` and `rlrun --cfg job`: min and median of N runs of each, taken in
rounds so that a shared machine's load falls on every command alike. "hydra's path" is `--cfg job`
answered by Hydra's app, as before rlrun composed the job's config itself.

    python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RLRUN = [str(Path(sys.executable).parent / "rlrun")]
HYDRAS_PATH = [sys.executable, "-c", "from rlrun import cli; cli.print_job_config = lambda argv: False; cli.main()"]
COMMANDS = {
    "rlrun --help": RLRUN + ["--help"],
    "rlrun --cfg job": RLRUN + ["--cfg", "job"],
    "rlrun --cfg job algo=dqn env=Acrobot-v1": RLRUN + ["--cfg", "job", "algo=dqn", "env=Acrobot-v1"],
    "rlrun --cfg job --resolve": RLRUN + ["--cfg", "job", "--resolve"],
    "hydra's path: --cfg job": HYDRAS_PATH + ["--cfg", "job"],
    "hydra's path: --cfg job algo=dqn env=Acrobot-v1": HYDRAS_PATH + ["--cfg", "job", "algo=dqn", "env=Acrobot-v1"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    print(f"{runs} runs each; load average {' '.join(f'{load:.2f}' for load in os.getloadavg())} at the end")
    for name, values in times.items():
        print(f"  {name:50} min {min(values):.2f} s  median {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
