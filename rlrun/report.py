"""`rlrun-report DIR`: compare the runs under DIR at a glance.

Runs that differ only in `seed` form a group. For each group it prints one table row (final eval
return mean +- std over seeds and its interquartile mean, env steps and wall seconds until the metric
first reaches the solve threshold, training steps per second, failed runs) and writes `report.csv`
(the same rows) and `report.png` (the metric against env steps: the mean over seeds and a 95%
bootstrap confidence band) into DIR.

A run is a folder with summary.json (completed) or error.txt (failed, written by a job that raised),
or a job folder with neither (unfinished: still running, or killed). Its config is the
`.hydra/config.yaml` of its folder or of the nearest parent (the runs of `sweep.seeds_per_trial`
live in `seed=<s>` subfolders of their job folder). The curves come from the TensorBoard scalars.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from rlrun.errors import ConfigError, user_errors

DEFAULT_METRIC = "eval/mean_return"
SUMMARY_KEYS = ("seed", "env_steps", "steps_per_second", "final_eval")  # what the report reads from summary.json
MAX_PLOTTED = 10  # curves in report.png: the groups with the best final return


@dataclass
class Run:
    folder: Path
    status: str                  # completed | failed | unfinished
    algo: str
    env_id: str
    seed: int
    config: dict[str, Any]       # the job's config, seed excluded
    overrides: list[str]         # the job's command-line overrides, seed excluded
    summary: dict[str, Any] | None
    error: str | None            # the last line of error.txt

    @property
    def group_key(self) -> str:
        return json.dumps([self.algo, self.config], sort_keys=True, default=str)


@dataclass
class Curve:
    steps: np.ndarray
    values: np.ndarray
    wall_seconds: np.ndarray     # since the run's first TensorBoard event

    def first_reaching(self, threshold: float) -> int | None:
        """Index of the first point at or above `threshold`."""
        reached = np.flatnonzero(self.values >= threshold)
        return int(reached[0]) if reached.size else None


def job_folder(folder: Path) -> Path | None:
    """The folder itself or its nearest parent with a .hydra/config.yaml."""
    return next((f for f in (folder, *folder.parents) if (f / ".hydra" / "config.yaml").is_file()), None)


def find_runs(root: Path) -> list[Run]:
    finished = {path.parent for name in ("summary.json", "error.txt") for path in root.rglob(name)}
    jobs = {path.parent.parent for path in root.rglob(".hydra/config.yaml")}
    unfinished = {job for job in jobs if not any(job == f or job in f.parents for f in finished)}
    return [read_run(folder) for folder in sorted(finished | unfinished)]


def read_run(folder: Path) -> Run:
    job = job_folder(folder)
    if job is None:
        raise ConfigError(f"{folder} has no .hydra/config.yaml in it or above it; is it an rlrun run folder?")
    config = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"))
    choices = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.runtime.choices
    overrides = [o for o in OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
                 if o.lstrip("+~").split("=", 1)[0] != "seed"]
    summary = read_summary(folder / "summary.json") if (folder / "summary.json").is_file() else None
    error = None
    if (folder / "error.txt").is_file():
        error = (folder / "error.txt").read_text().strip().splitlines()[-1]
    seed = summary["seed"] if summary else config["seed"]
    config.pop("seed")
    status = "completed" if summary else "failed" if error else "unfinished"
    return Run(folder, status, choices.algo, config["env"]["id"], seed, config, overrides, summary, error)


def read_summary(path: Path) -> dict[str, Any]:
    """A run's summary.json, refused in one line when it is damaged or lacks what the report reads."""
    redo = f"delete it and resume the run (rlrun resume={path.parent}) to write it again, or move the run away"
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); {redo}") from error
    missing = [key for key in SUMMARY_KEYS if not isinstance(summary, dict) or key not in summary]
    if missing or not isinstance(summary["final_eval"], dict) or "mean_return" not in summary["final_eval"]:
        raise ConfigError(f"{path} is incomplete (it has no {', '.join(missing) or 'final_eval.mean_return'}); {redo}")
    return summary


def read_curve(folder: Path, metric: str) -> Curve | None:
    """The scalar `metric` of the run in `folder`; None when the run wrote none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    if metric not in events.Tags()["scalars"]:
        return None
    scalars = events.Scalars(metric)
    return Curve(steps=np.array([s.step for s in scalars]), values=np.array([s.value for s in scalars]),
                 wall_seconds=np.array([s.wall_time for s in scalars]) - events.FirstEventTimestamp())


def short(override: str) -> str:
    """`algo.lr=0.00021595992514` -> `algo.lr=0.000216`: the floats an Optuna search draws, to 3 digits."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return override if len(value) <= 6 or number.is_integer() else f"{key}={number:.3g}"


def labels(groups: list[list[Run]]) -> list[str]:
    """Each group's overrides without those every group shares; algo and env when nothing else tells them apart."""
    shared = set.intersection(*(set(group[0].overrides) for group in groups))
    names = [" ".join(short(o) for o in group[0].overrides if o not in shared) for group in groups]
    if len(set(names)) < len(names):
        names = [f"{group[0].algo} {group[0].env_id} {name}".strip() for group, name in zip(groups, names)]
    return [name or f"{group[0].algo} {group[0].env_id}" for group, name in zip(groups, names)]


def solve_threshold(env_id: str) -> float | None:
    """The env's reward_threshold from its gymnasium registration, when it has one."""
    import gymnasium as gym

    try:
        return gym.spec(env_id).reward_threshold
    except Exception:  # an id whose module is not importable here: no threshold
        return None


def on_common_steps(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """The curves interpolated onto the union of their steps within the range all of them cover."""
    start, end = max(c.steps[0] for c in curves), min(c.steps[-1] for c in curves)
    steps = np.unique(np.concatenate([c.steps for c in curves]))
    steps = steps[(steps >= start) & (steps <= end)]
    return steps, np.stack([np.interp(steps, c.steps, c.values) for c in curves])


def group_row(label: str, runs: list[Run], curves: dict[Path, Curve], threshold: float | None) -> dict[str, Any]:
    from scipy.stats import trim_mean

    done = [run for run in runs if run.summary]
    finals = np.array([run.summary["final_eval"]["mean_return"] for run in done])
    solved = [(c.steps[i], c.wall_seconds[i]) for c in (curves.get(run.folder) for run in done)
              if c is not None and threshold is not None and (i := c.first_reaching(threshold)) is not None]
    return {
        "config": label,
        "seeds": " ".join(str(run.seed) for run in sorted(done, key=lambda run: run.seed)),
        "failed": sum(run.status == "failed" for run in runs),
        "unfinished": sum(run.status == "unfinished" for run in runs),
        "final_mean": float(finals.mean()) if done else None,
        "final_std": float(finals.std()) if done else None,
        "final_iqm": float(trim_mean(finals, 0.25)) if done else None,
        "threshold": threshold,
        "solved": f"{len(solved)}/{len(done)}",
        "steps_to_threshold": float(np.mean([s for s, _ in solved])) if solved else None,
        "seconds_to_threshold": float(np.mean([w for _, w in solved])) if solved else None,
        "steps_per_second": float(np.mean([run.summary["steps_per_second"] for run in done])) if done else None,
    }


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]], metric: str) -> str:
    """The rows as aligned text; `solved` compares `metric` with the threshold."""
    header = ["config", "seeds", "final eval return", "IQM", f"solved ({metric})", "steps to it", "seconds",
              "steps/s", "failed"]
    lines = [[row["config"], row["seeds"] or "-",
              "-" if row["final_mean"] is None else f"{row['final_mean']:.1f} +- {row['final_std']:.1f}",
              number(row["final_iqm"]), f"{row['solved']} (>= {number(row['threshold'])})",
              number(row["steps_to_threshold"], 0), number(row["seconds_to_threshold"]),
              number(row["steps_per_second"], 0), str(row["failed"] + row["unfinished"])] for row in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *lines])


def plot(path: Path, groups: list[list[Run]], names: list[str], curves: dict[Path, Curve], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import bootstrap

    figure, axes = plt.subplots(figsize=(9, 6))
    for runs, name in list(zip(groups, names))[:MAX_PLOTTED]:
        group_curves = [curves[run.folder] for run in runs if run.folder in curves]
        if not group_curves:
            continue
        steps, values = on_common_steps(group_curves)
        label = textwrap.fill(f"{name} ({len(group_curves)} seeds)", 110)
        line, = axes.plot(steps, values.mean(axis=0), label=label)
        if len(group_curves) > 1:
            band = bootstrap((values,), np.mean, axis=0, confidence_level=0.95, method="percentile",
                             n_resamples=2000, rng=0).confidence_interval
            axes.fill_between(steps, band.low, band.high, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("env steps")
    axes.set_ylabel(metric)
    best = f", the best {MAX_PLOTTED} of {len(groups)} groups" if len(groups) > MAX_PLOTTED else ""
    axes.set_title(f"{metric}: mean over seeds, 95% bootstrap band{best}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.12))
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def report(root: Path, metric: str = DEFAULT_METRIC, threshold: float | None = None) -> list[dict[str, Any]]:
    """Print the table, write report.csv and report.png into `root`; return the table's rows."""
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"no rlrun runs under {root} (no summary.json, error.txt or .hydra/)")
    curves = {run.folder: curve for run in runs if (curve := read_curve(run.folder, metric)) is not None}
    if not curves and any(run.summary for run in runs):
        raise ConfigError(f"no run under {root} logged the scalar {metric!r}; "
                          f"pick another with --metric (e.g. {DEFAULT_METRIC}, charts/episodic_return)")
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.group_key, []).append(run)
    groups = list(grouped.values())
    rows = [group_row(name, group, curves, solve_threshold(group[0].env_id) if threshold is None else threshold)
            for name, group in zip(labels(groups), groups)]
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["final_mean"] is None, -(rows[i]["final_mean"] or 0)))
    rows, groups = [rows[i] for i in order], [groups[i] for i in order]  # the best final return first

    print(f"{len(runs)} runs in {len(groups)} groups under {root}\n")
    print(table(rows, metric))
    for run in runs:
        if run.status != "completed":
            print(f"{run.status}: {run.folder.relative_to(root)}" + (f": {run.error}" if run.error else ""))
    with (root / "report.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(root / "report.png", groups, [row["config"] for row in rows], curves, metric)
    print(f"\nwrote {root / 'report.csv'} and {root / 'report.png'}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlrun-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="a sweep folder (outputs/multirun/<date>/<time>), any folder "
                                                "above runs, or a single run folder")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help=f"TensorBoard scalar to plot and to compare with the threshold (default {DEFAULT_METRIC})")
    parser.add_argument("--threshold", type=float, default=None,
                        help="solve threshold of the metric (default: the env's gymnasium reward_threshold)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    with user_errors("rlrun-report"):
        report(args.dir, args.metric, args.threshold)


if __name__ == "__main__":
    main(sys.argv[1:])
