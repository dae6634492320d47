"""Nodes of 1 CPU: what can run there runs, what cannot fails within seconds and says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local_cluster import LocalCluster
from test_multi_node import TAXI, actors, cluster_env, new_nodes, rayline

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


def test_the_prediction_pool_runs_on_one_cpu_nodes(small: LocalCluster, env: dict[str, str]) -> None:
    """A table's pool has no read task to wait for a CPU (its actors read their own parts), so
    nodes of 1 CPU suffice: it was refused, as its read tasks and actors waited on each other."""
    rayline(env, "train", TAXI, "--set", "data.rows=5000")  # in process: a model to predict with
    before = actors(small, "PartPredictor")
    out = rayline(
        env, "predict", TAXI, "--set", "data.rows=5000", "--set", "predict.engine=ray",
        "--set", "predict.concurrency=1",
    )  # fmt: skip
    assert "Ray actor pool" in out, out
    assert len(new_nodes(small, "PartPredictor", before)) == 1
