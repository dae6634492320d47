"""The same specs on a real 2-node Ray cluster: Train workers, the prediction pool and Serve
replicas land on both nodes, and the terminal stays quiet.

One cluster for the module (``ray start --head`` + ``ray start --address``, 2 CPUs a node, Ray's
token auth on), stopped by its process ids. Every command is the ``rayline`` CLI in a process of
its own with ``RAY_ADDRESS`` set, as a user runs it; placement is read from Ray's state API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_cluster import LocalCluster, free_port

from service import TAXI_RECORD, call

pytestmark = pytest.mark.slow
SCRIPT = Path(sys.executable).with_name("rayline")
REPO = Path(__file__).resolve().parents[2]
TAXI = str(REPO / "examples" / "taxi.yaml")
# What a quiet command must not print: the raylets' notices and Ray's own log lines.
NOISE = ("(raylet)", "WARNING", "core_worker", "INFO worker.py")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    running = LocalCluster(nodes=2, cpus=2).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def env(cluster: LocalCluster, rayline_home: Path) -> dict[str, str]:
    return {**cluster.env(), "RAY_ADDRESS": cluster.address, "RAYLINE_HOME": str(rayline_home)}


def rayline(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"rayline {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    noise = [line for line in (done.stdout + done.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise[:5]
    return done.stdout


def actors(cluster: LocalCluster, class_part: str) -> dict[str, str]:
    """Actor id -> node id of every actor (alive or dead) whose class name contains ``class_part``."""
    # Ray's state API over HTTP (what `ray list actors` calls), with the cluster's token.
    url = f"{cluster.dashboard}/api/v0/actors?limit=10000&detail=1"
    with urllib.request.urlopen(urllib.request.Request(url, headers=cluster.headers()), timeout=30) as reply:
        found = json.load(reply)["data"]["result"]["result"]
    return {a["actor_id"]: a["node_id"] for a in found if class_part in a["class_name"]}


def new_nodes(cluster: LocalCluster, class_part: str, before: dict[str, str]) -> set[str]:
    return {node for actor, node in actors(cluster, class_part).items() if actor not in before}


def test_train_workers_spread_over_both_nodes(cluster: LocalCluster, env: dict[str, str]) -> None:
    before = actors(cluster, "RayTrainWorker")
    out = rayline(env, "train", TAXI, "--set", "scaling.num_workers=2", "--set", "data.rows=20000")
    assert "(ray-train:2" in out, out
    assert len(new_nodes(cluster, "RayTrainWorker", before)) == 2


def test_prediction_pool_spans_both_nodes(cluster: LocalCluster, env: dict[str, str]) -> None:
    rayline(env, "train", TAXI, "--set", "scaling.num_workers=2", "--set", "data.rows=20000")
    before = actors(cluster, "BatchPredictor")
    out = rayline(
        env, "predict", TAXI, "--set", "data.rows=20000", "--set", "predict.engine=ray",
        "--set", "predict.concurrency=2",
    )  # fmt: skip
    assert "Ray actor pool" in out, out
    assert len(new_nodes(cluster, "BatchPredictor", before)) == 2


def test_serve_replicas_on_both_nodes(cluster: LocalCluster, env: dict[str, str], tmp_path: Path) -> None:
    rayline(env, "train", TAXI, "--set", "data.rows=5000")
    before = actors(cluster, "ServeReplica")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", TAXI, "--model", "latest", "--port", str(port), "--set", "serve.num_replicas=2"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(OSError):  # not listening yet
                if call(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            time.sleep(1)
        status, body = call(f"http://127.0.0.1:{port}/predict", json.dumps([TAXI_RECORD] * 3).encode())
        assert status == 200 and len(body["predictions"]) == 3, body
        assert len(new_nodes(cluster, "ServeReplica", before)) == 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    noise = [line for line in log.read_text().splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise[:5]
