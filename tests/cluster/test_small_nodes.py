"""Nodes of 1 CPU: what can run there runs, what cannot fails within seconds and says why."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_cluster import LocalCluster
from test_multi_node import SCRIPT, TAXI, actors, cluster_env, new_nodes, rayline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small() -> Iterator[LocalCluster]:
    running = LocalCluster(nodes=2, cpus=1).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def leaves_the_cluster_idle(small: LocalCluster) -> Iterator[None]:
    yield
    small.wait_idle()


@pytest.fixture
def env(small: LocalCluster, rayline_home: Path) -> dict[str, str]:
    return cluster_env(small, rayline_home)


def test_two_workers_train_on_two_one_cpu_nodes(small: LocalCluster, env: dict[str, str]) -> None:
    before = actors(small, "RayTrainWorker")
    out = rayline(env, "train", TAXI, "--set", "scaling.num_workers=2", "--set", "data.rows=20000")
    assert "(ray-train:2" in out, out
    assert len(new_nodes(small, "RayTrainWorker", before)) == 2


def test_the_prediction_pool_refuses_one_cpu_nodes_at_once(env: dict[str, str]) -> None:
    rayline(env, "train", TAXI, "--set", "data.rows=5000")  # in process: a model to predict with
    start = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "predict", TAXI, "--set", "data.rows=5000", "--set", "predict.engine=ray"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "predict.engine=ray needs a Ray node with 2 CPUs (the largest has 1)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - start < 30  # it waited forever before
