"""Wall and CPU seconds of `rlrun --help`, `rlrun --cfg job` and `rlrun total_steps=1`: min and median of N runs of
each, taken in rounds so that a shared machine's load falls on every command alike (CPU seconds, user + system of
the command's processes, move less with the load than wall seconds).

    python bench/cli_startup.py [--runs 5] [--before CHECKOUT]

--before CHECKOUT also times each command with the rlrun package of another checkout of this repository (e.g.
`git worktree add /tmp/before <commit>`), side by side in the same rounds: its `rlrun/` and `configs/` are put
first on PYTHONPATH (a `rlrun/configs` link to its `configs/` is made where missing).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RLRUN = [str(Path(sys.executable).parent / "rlrun")]
COMMANDS = {
    "rlrun --help": ["--help"],
    "rlrun --cfg job": ["--cfg", "job"],
    "rlrun --cfg job algo=dqn env=Acrobot-v1": ["--cfg", "job", "algo=dqn", "env=Acrobot-v1"],
    "rlrun total_steps=1": ["total_steps=1", "eval.episodes=1", "progress=false"],
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def seconds(command: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of `command`."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=cwd)
    return time.perf_counter() - start, cpu_seconds() - cpu_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout of rlrun, timed side by side")
    options = parser.parse_args()
    versions = {"now": dict(os.environ)}
    if options.before is not None:
        package_configs = options.before / "rlrun" / "configs"
        if not package_configs.exists():
            package_configs.symlink_to(options.before.resolve() / "configs")
        versions["before"] = {**os.environ, "PYTHONPATH": str(options.before.resolve())}
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(name, version): [] for name in COMMANDS
                                                               for version in versions}
    with tempfile.TemporaryDirectory() as workdir:  # the runs' outputs/ go there
        for _ in range(options.runs):
            for name, arguments in COMMANDS.items():
                for version, env in versions.items():
                    times[name, version].append(seconds(RLRUN + arguments, env, workdir))
    print(f"{options.runs} runs each; load average {' '.join(f'{load:.2f}' for load in os.getloadavg())} at the end")
    for (name, version), values in times.items():
        wall, cpu = zip(*values)
        print(f"  {name:42} {version:7} wall min {min(wall):.2f} s median {statistics.median(wall):.2f} s   "
              f"CPU min {min(cpu):.2f} s median {statistics.median(cpu):.2f} s")


if __name__ == "__main__":
    main()
