"""Reading tracked runs back in tests: W&B's offline run folders, and a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768  # a .wandb file is a LevelDB-style log: 32 KiB blocks of records split into chunks
FULL, LAST = 1, 4


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of an offline run's run-<id>.wandb: a 7-byte file header, then chunks, each with a 7-byte
    header (checksum, length, type); a block's last bytes, when too few for a header, are padding."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:
            position += BLOCK - position % BLOCK
            continue
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_offline_runs(folder: Path) -> list[dict]:
    """Each offline run under folder/wandb, oldest first: its run record, its history ({tag: value} by _step)
    and its summary."""
    runs = []
    # offline-run-<start time>-<id>[-<n>]: by name is in start order
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"), key=lambda path: path.parent.name):
        run, history, summary = None, {}, {}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                items = {item.key or "/".join(item.nested_key): float(item.value_json) for item in record.history.item}
                history.setdefault(int(items.pop("_step")), {}).update(
                    {key: value for key, value in items.items() if not key.startswith("_")})
            elif kind == "summary":
                summary.update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
        runs.append({"run": run, "history": history, "summary": summary})
    return runs


def wandb_curve(folder: Path, tag: str) -> list[tuple[int, float]]:
    """The curve W&B shows once the offline runs are synced: each run after the first continues the run it was
    rewound to (its branch point) from that step on."""
    curve: dict[int, float] = {}
    for run in wandb_offline_runs(folder):
        if run["run"].HasField("branch_point"):
            curve = {step: value for step, value in curve.items() if step <= run["run"].branch_point.value}
        for step, values in run["history"].items():
            if tag in values:
                assert step not in curve, f"step {step} of {tag} logged twice"
                curve[step] = values[tag]
    return sorted(curve.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlflow_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on a free 127.0.0.1 port, storing in folder; returns once it answers /health."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                               "--artifacts-destination", str(folder / "artifacts")],
                              cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read().decode()
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                if answer.status == 200:
                    return server, uri
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"mlflow server did not answer on {uri}")
