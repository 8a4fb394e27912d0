"""`rlrun-report DIR`: compare the runs under DIR at a glance.

Runs that differ only in `seed` form a group. For each group it prints one table row, by env first
(final eval return mean +- std over seeds, its interquartile mean with a 95% stratified-bootstrap
interval from 5 seeds on (rliable), env steps and wall seconds until the metric first reaches the
solve threshold, training steps per second, failed runs) and writes `report.csv` (the same rows) and
`report.png` (or `--format pdf|svg`: one panel per env, the metric against env steps with a marker at
each evaluation, the IQM over seeds with its interval, or the seeds' range below 5 seeds, and the
solve threshold) into DIR.

A run is a folder with summary.json (completed) or error.txt (failed, written by a job that raised),
or a job folder with neither (unfinished: still running, or killed). Its config is the
`.hydra/config.yaml` of its folder or of the nearest parent (the runs of `sweep.seeds_per_trial`
live in `seed=<s>` subfolders of their job folder). The curves come from the TensorBoard scalars.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from rlrun.errors import ConfigError, user_errors

DEFAULT_METRIC = "eval/mean_return"
SUMMARY_KEYS = ("seed", "env_steps", "steps_per_second", "final_eval")  # what the report reads from summary.json
MAX_PLOTTED = 10  # curves per panel of the plot: the groups with the best final return
MIN_SEEDS_FOR_INTERVAL = 5  # fewer seeds get their range as the band, not a bootstrap confidence interval
BOOTSTRAP_REPS = 2000
IMAGE_FORMATS = ("png", "pdf", "svg")


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


def iqm_with_interval(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The interquartile mean over runs of `scores` (runs x points) at each point and, with MIN_SEEDS_FOR_INTERVAL
    runs or more, its 95% stratified-bootstrap confidence interval (rliable, Agarwal et al. 2021); (iqm, low, high),
    low and high None for fewer runs, where a bootstrap over so few values is no confidence interval."""
    from rliable import library, metrics

    def iqm(values: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(values[:, :, point]) for point in range(values.shape[-1])])

    runs = scores[:, None, :]  # one task: the env
    if len(scores) < MIN_SEEDS_FOR_INTERVAL:
        return iqm(runs), None, None
    with warnings.catch_warnings():  # arch's FutureWarning about the random_state rliable passes it
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = library.get_interval_estimates({"group": runs}, iqm, reps=BOOTSTRAP_REPS,
                                                           random_state=np.random.RandomState(0))
    return points["group"], intervals["group"][0], intervals["group"][1]


def group_row(label: str, runs: list[Run], curves: dict[Path, Curve], threshold: float | None) -> dict[str, Any]:
    done = [run for run in runs if run.summary]
    finals = np.array([run.summary["final_eval"]["mean_return"] for run in done])
    iqm, low, high = iqm_with_interval(finals[:, None]) if done else (None, None, None)
    solved = [(c.steps[i], c.wall_seconds[i]) for c in (curves.get(run.folder) for run in done)
              if c is not None and threshold is not None and (i := c.first_reaching(threshold)) is not None]
    return {
        "env": runs[0].env_id,
        "config": label,
        "seeds": " ".join(str(run.seed) for run in sorted(done, key=lambda run: run.seed)),
        "failed": sum(run.status == "failed" for run in runs),
        "unfinished": sum(run.status == "unfinished" for run in runs),
        "final_mean": float(finals.mean()) if done else None,
        "final_std": float(finals.std()) if done else None,
        "final_iqm": None if iqm is None else float(iqm[0]),
        "final_iqm_ci_low": None if low is None else float(low[0]),
        "final_iqm_ci_high": None if high is None else float(high[0]),
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
    header = ["env", "config", "seeds", "final eval return", "IQM [95% CI]", f"solved ({metric})", "steps to it",
              "seconds", "steps/s", "failed"]
    lines = [[row["env"], row["config"], row["seeds"] or "-",
              "-" if row["final_mean"] is None else f"{row['final_mean']:.1f} +- {row['final_std']:.1f}",
              number(row["final_iqm"]) + ("" if row["final_iqm_ci_low"] is None else
                                          f" [{row['final_iqm_ci_low']:.1f}, {row['final_iqm_ci_high']:.1f}]"),
              f"{row['solved']} (>= {number(row['threshold'])})",
              number(row["steps_to_threshold"], 0), number(row["seconds_to_threshold"]),
              number(row["steps_per_second"], 0), str(row["failed"] + row["unfinished"])] for row in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *lines])


def band_label(seeds: int) -> str:
    if seeds >= MIN_SEEDS_FOR_INTERVAL:
        return f"{seeds} seeds, 95% CI"
    return f"{seeds} seed" if seeds == 1 else f"range of {seeds} seeds"


def plot(path: Path, groups: list[list[Run]], rows: list[dict[str, Any]], curves: dict[Path, Curve], metric: str):
    """One panel per env: each group's IQM over seeds at every evaluation (a marker each), its band (the 95%
    stratified-bootstrap CI from MIN_SEEDS_FOR_INTERVAL seeds on, the seeds' range below) and the env's solve
    threshold; the format follows `path`'s suffix. Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(row["env"] for row in rows))
    columns = min(len(envs), 3)
    panel_rows = math.ceil(len(envs) / columns)
    with plt.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):  # text stays text (editable in a paper)
        figure, axes = plt.subplots(panel_rows, columns, figsize=(6.5 * columns, 5 * panel_rows), squeeze=False)
        for env, ax in zip(envs, axes.flat):
            in_env = [(runs, row) for runs, row in zip(groups, rows) if row["env"] == env]
            for runs, row in in_env[:MAX_PLOTTED]:
                group_curves = [curves[run.folder] for run in runs if run.folder in curves]
                if not group_curves:
                    continue
                steps, values = on_common_steps(group_curves)
                iqm, low, high = iqm_with_interval(values)
                if low is None and len(values) > 1:
                    low, high = values.min(axis=0), values.max(axis=0)
                name = textwrap.fill(f"{row['config']} ({band_label(len(values))})", 70)
                line, = ax.plot(steps, iqm, marker="o", markersize=4, label=name)
                if low is not None:
                    ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
            threshold = in_env[0][1]["threshold"]
            if threshold is not None:
                ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label=f"solved: {threshold:g}")
            more = f" (the best {MAX_PLOTTED} of {len(in_env)} groups)" if len(in_env) > MAX_PLOTTED else ""
            ax.set_title(f"{env}{more}")
            ax.set_xlabel("env steps")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14))
        for ax in list(axes.flat)[len(envs):]:
            ax.set_visible(False)
        figure.suptitle(f"{metric}: interquartile mean over seeds; band: 95% stratified-bootstrap CI with "
                        f"{MIN_SEEDS_FOR_INTERVAL}+ seeds, else the seeds' range (min to max)")
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return figure


def report(root: Path, metric: str = DEFAULT_METRIC, threshold: float | None = None, env: str | None = None,
           image_format: str = "png") -> list[dict[str, Any]]:
    """Print the table, write report.csv and report.<image_format> into `root`; return the table's rows (by env,
    then best final return first). `env` keeps the runs of that env id only."""
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"no rlrun runs under {root} (no summary.json, error.txt or .hydra/)")
    if env is not None:
        found = sorted({run.env_id for run in runs})
        runs = [run for run in runs if run.env_id == env]
        if not runs:
            raise ConfigError(f"no run under {root} trains --env {env}; the envs there are {', '.join(found)}")
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
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["env"], rows[i]["final_mean"] is None,
                                                    -(rows[i]["final_mean"] or 0)))
    rows, groups = [rows[i] for i in order], [groups[i] for i in order]  # by env, the best final return first

    print(f"{len(runs)} runs in {len(groups)} groups under {root}\n")
    print(table(rows, metric))
    for run in runs:
        if run.status != "completed":
            print(f"{run.status}: {run.folder.relative_to(root)}" + (f": {run.error}" if run.error else ""))
    few = [row["config"] for row in rows if 1 < len(row["seeds"].split()) < MIN_SEEDS_FOR_INTERVAL]
    if few:
        print(f"\nnote: {len(few)} group(s) have 2-{MIN_SEEDS_FOR_INTERVAL - 1} seeds: their band is the seeds' "
              f"range (min to max), not a confidence interval; run {MIN_SEEDS_FOR_INTERVAL} or more seeds for a 95% "
              "stratified-bootstrap interval of the IQM")
    with (root / "report.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    image = root / f"report.{image_format}"
    plot(image, groups, rows, curves, metric)
    print(f"\nwrote {root / 'report.csv'} and {image}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlrun-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="a sweep folder (outputs/multirun/<date>/<time>), any folder "
                                                "above runs, or a single run folder")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help=f"TensorBoard scalar to plot and to compare with the threshold (default {DEFAULT_METRIC})")
    parser.add_argument("--threshold", type=float, default=None,
                        help="solve threshold of the metric, a dashed line in each panel (default: the env's "
                             "gymnasium reward_threshold)")
    parser.add_argument("--env", default=None, help="report the runs of this env id only (default: all, a panel each)")
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="png",
                        help="the plot's file format: report.png, report.pdf or report.svg (default png)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    with user_errors("rlrun-report"):
        report(args.dir, args.metric, args.threshold, args.env, args.format)


if __name__ == "__main__":
    main(sys.argv[1:])
