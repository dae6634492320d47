"""Scale-out: the same `rayline train` on one Ray node of 1 CPU and on two such nodes.

Two real clusters on this machine (``ray start``, as in ``tests/cluster``), one after the other:
1 node x 1 CPU with 1 Ray Train worker, then 2 nodes x 1 CPU with 2 workers, one per node
(``scaling.placement: spread``). Same taxi parquet, same rounds, no early stopping; each command
a fresh process with ``RAY_ADDRESS`` set. Prints the whole-command and boosting seconds and the
speed-up of two nodes over one (2.0 would be perfect scaling).

    .venv/bin/python benchmarks/bench_scale.py --rows 1000000 --rounds 50 --repeats 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_train_xgboost import last_boost_seconds, rayline_cmd
from common import BIN, REPO, median, table, timed

sys.path.insert(0, str(REPO / "tests" / "cluster"))
from local_cluster import LocalCluster


def measure(nodes: int, data: Path, rounds: int, repeats: int, home: Path) -> tuple[float, float]:
    """Median (whole command s, boosting s) of ``repeats`` trainings on ``nodes`` 1-CPU nodes."""
    cluster = LocalCluster(nodes=nodes, cpus=1).start()
    try:
        env = {**cluster.env(), "RAY_ADDRESS": cluster.address, "RAYLINE_HOME": str(home), "RAYLINE_SHARED_DISK": "1"}
        cmd = [*rayline_cmd(data, rounds, str(nodes)), "--set", "scaling.cpus_per_worker=1"]
        timed([*rayline_cmd(data, 2, str(nodes)), "--set", "scaling.cpus_per_worker=1"], env)  # warm-up
        walls, boosts = [], []
        for _ in range(repeats):
            wall, _ = timed(cmd, env)
            walls.append(wall)
            boosts.append(last_boost_seconds(home))
        return median(walls), median(boosts)
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="rl-scale-") as tmp:
        data = Path(tmp) / f"taxi-{args.rows}.parquet"
        timed([str(BIN / "rayline"), "data", "taxi", "--rows", str(args.rows), "--out", str(data)])
        one = measure(1, data, args.rounds, args.repeats, Path(tmp) / "home-1")
        two = measure(2, data, args.rounds, args.repeats, Path(tmp) / "home-2")
    rows.append([f"{args.rows:,}", "1 node x 1 CPU, 1 worker", one[0], 1.0, one[1], 1.0])
    rows.append([f"{args.rows:,}", "2 nodes x 1 CPU, 2 workers", two[0], one[0] / two[0], two[1], one[1] / two[1]])
    print(table(["rows", "cluster", "whole command s", "speed-up", "boosting s", "speed-up"], rows))


if __name__ == "__main__":
    main()
