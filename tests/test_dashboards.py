"""TensorBoard's HParams dashboard as a researcher opens it: a real `tensorboard` server over a mixed sweep, read
back through the hparams plugin's HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import run_rlrun

TINY = ("total_steps=2000", "eval.every=1000", "eval.episodes=2", "checkpoint.every=2000")
METRICS = {"summary/final_eval_return", "summary/best_eval_return", "summary/steps_to_threshold",
           "summary/seconds_to_threshold", "summary/steps_per_second"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, request: dict) -> dict:
    """A POST to the hparams plugin, as TensorBoard's frontend sends it."""
    data = json.dumps(request).encode()
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("dashboards")
    result = run_rlrun("-m", "algo=a2c,reinforce", "seed=0,1", *TINY, "hydra.sweep.dir=sweep", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "sweep"


@pytest.fixture(scope="module")
def hparams_api(mixed_sweep):
    """The URL of the hparams plugin of a real `tensorboard --logdir <sweep>` on a free 127.0.0.1 port, once it has
    loaded the sweep's 4 runs."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(mixed_sweep),
                               "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/data/plugin/hparams"
    deadline = time.monotonic() + 60
    while True:
        try:
            if len(session_groups(url)["sessionGroups"]) == 4:
                break
        except (urllib.error.URLError, ConnectionError, KeyError):
            pass
        assert time.monotonic() < deadline and server.poll() is None, "tensorboard did not serve the 4 runs in 60 s"
        time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


def session_groups(url: str) -> dict:
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    return post(f"{url}/session_groups", {"startIndex": 0, "sliceSize": 100, "allowedStatuses": statuses})


def test_job_folders_hold_the_swept_keys_only(mixed_sweep):
    jobs = {path.name for path in mixed_sweep.iterdir() if path.is_dir()}
    assert jobs == {f"algo={algo},seed={seed}" for algo in ("a2c", "reinforce") for seed in (0, 1)}
    overrides = yaml.safe_load((mixed_sweep / "algo=a2c,seed=0" / ".hydra" / "overrides.yaml").read_text())
    assert set(TINY) <= set(overrides)  # the constants stay in the job's overrides


def test_hparams_columns_are_every_run_s_keys_with_the_swept_ones_first(hparams_api):
    experiment = post(f"{hparams_api}/experiment", {"experimentName": ""})
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    # both algorithms' own hyperparameters, the seed, the env
    assert {"algo", "env", "seed", "algo.gae_lambda", "algo.n_steps", "algo.baseline", "algo.episodes_per_update",
            "algo.value_lr"} <= infos.keys()
    assert set(infos["algo"]["domainDiscrete"]) == {"a2c", "reinforce"}
    assert infos["seed"]["domainInterval"] == {"minValue": 0, "maxValue": 1}
    differing = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
    assert {"algo", "seed"} <= set(differing)
    assert [info["name"] for info in experiment["hparamInfos"]][:len(differing)] == differing  # the varied first
    assert METRICS <= {metric["name"]["tag"] for metric in experiment["metricInfos"]}
    assert infos["algo.normalize_advantages"]["type"] == "DATA_TYPE_BOOL"  # a boolean, not 0/1


def test_hparams_trials_have_short_names_and_their_metrics(hparams_api, mixed_sweep):
    groups = session_groups(hparams_api)["sessionGroups"]
    assert {group["name"] for group in groups} == {f"algo={a},seed={s}" for a in ("a2c", "reinforce") for s in (0, 1)}
    reinforce = next(group for group in groups if group["name"] == "algo=reinforce,seed=1")
    assert reinforce["hparams"]["seed"] == 1 and reinforce["hparams"]["algo"] == "reinforce"
    assert "algo.gae_lambda" not in reinforce["hparams"] and "algo.baseline" in reinforce["hparams"]
    values = {metric["name"]["tag"]: metric.get("value") for metric in reinforce["metricValues"]}
    summary = json.loads((mixed_sweep / "algo=reinforce,seed=1" / "summary.json").read_text())
    assert values["summary/final_eval_return"] == pytest.approx(summary["final_eval"]["mean_return"])
    assert values["summary/best_eval_return"] == pytest.approx(summary["best_eval_return"])
    assert values["summary/steps_to_threshold"] == "NaN"  # CartPole's 475 not reached in 2000 steps
