"""Nodes of 1 CPU: what can run there runs, what cannot fails within seconds and says why."""

from __future__ import annotations

import re
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


def test_the_prediction_pool_spans_two_one_cpu_nodes(small: LocalCluster, env: dict[str, str], tmp_path: Path) -> None:
    """Two actors of 1 CPU, one on each node; rows/s on two nodes against one is printed (the
    nodes share this machine's cores: a record, not a claim)."""
    import pyarrow.parquet as pq

    out = rayline(env, "train", TAXI, "--set", "data.rows=5000")
    run_id = out.split()[1]
    rayline(env, "data", "taxi", "--rows", "400000", "--out", str(tmp_path / "taxi.parquet"))
    source = tmp_path / "groups.parquet"  # 20 row groups: parts for two actors
    pq.write_table(pq.read_table(tmp_path / "taxi.parquet"), source, row_group_size=20_000)
    rates = {}
    for pool in (1, 2):
        before = actors(small, "PartPredictor")
        out = rayline(
            env, "predict", TAXI, "--model", run_id, "--input", str(source), "--out", str(tmp_path / f"{pool}.parquet"),
            "--set", "predict.engine=ray", "--set", f"predict.concurrency={pool}",
        )  # fmt: skip
        found = re.search(r"wrote ([\d,]+) rows .*\(([\d.]+) s, Ray actor pool", out)
        assert found is not None, out
        rates[pool] = int(found.group(1).replace(",", "")) / float(found.group(2))
        assert len(new_nodes(small, "PartPredictor", before)) == pool
    print(f"pool rows/s: 1 actor on 1 node {rates[1]:,.0f}; 2 actors on 2 nodes {rates[2]:,.0f}")
