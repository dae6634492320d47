"""rayline train (in-process fast path and 2 Ray Train workers) vs native xgboost, same data and work.

Same taxi parquet, 100 rounds, depth 6, hist, no early stopping, 2 threads; the three commands
alternate, each run a fresh process (whole-command time includes Python start-up and imports).

    .venv/bin/python benchmarks/bench_train_xgboost.py --rows 1000000 5000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import BIN, REPO, median, table, timed


def rayline_cmd(data: Path, rounds: int, workers: str) -> list[str]:
    return [
        str(BIN / "rayline"),
        "train",
        str(REPO / "examples" / "taxi.yaml"),
        "--set",
        f"data.source={data}",
        "--set",
        "data.rows=null",
        "--set",
        "data.scale=[]",
        "--set",
        f"model.num_boost_round={rounds}",
        "--set",
        "model.early_stopping_rounds=null",
        "--set",
        f"scaling.num_workers={workers}",
        "--set",
        f"train.report_every={rounds // 10 or 1}",
    ]


def last_boost_seconds(home: Path) -> float:
    os.environ["RAYLINE_HOME"] = str(home)
    from rayline.registry import Registry

    runs = Registry(home).list_runs("taxi", kind="train", limit=1)
    return float(runs[0].metrics.get("time_boost_s", float("nan")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="2", help="Ray Train workers for the distributed path ('' skips it)")
    args = ap.parse_args()
    env = {"RAYLINE_NUM_CPUS": "2", "OMP_NUM_THREADS": "2"}
    out: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        for rows in args.rows:
            data = Path(tmp) / f"taxi-{rows}.parquet"
            timed([str(BIN / "rayline"), "data", "taxi", "--rows", str(rows), "--out", str(data)])
            home = Path(tmp) / f"home-{rows}"
            walls: dict[str, list[float]] = {"native": [], "local": [], "workers": []}
            boosts: dict[str, list[float]] = {"native": [], "local": [], "workers": []}
            # warm-up: creates the MLflow store and fills the OS page cache for both sides
            timed(rayline_cmd(data, 5, "auto"), {**env, "RAYLINE_HOME": str(home)})
            for _ in range(args.repeats):
                wall, text = timed(
                    [
                        str(BIN / "python"),
                        str(REPO / "benchmarks" / "native_xgboost.py"),
                        str(data),
                        str(args.rounds),
                        "2",
                    ],
                    env,
                )
                walls["native"].append(wall)
                boosts["native"].append(json.loads(text)["boost_s"])
                wall, _ = timed(rayline_cmd(data, args.rounds, "auto"), {**env, "RAYLINE_HOME": str(home)})
                walls["local"].append(wall)
                boosts["local"].append(last_boost_seconds(home))
                if args.workers:
                    wall, _ = timed(rayline_cmd(data, args.rounds, args.workers), {**env, "RAYLINE_HOME": str(home)})
                    walls["workers"].append(wall)
                    boosts["workers"].append(last_boost_seconds(home))
            base_wall, base_boost = median(walls["native"]), median(boosts["native"])
            for name, label in (
                ("native", "native xgboost.train script"),
                ("local", "rayline train (auto: in-process)"),
                ("workers", f"rayline train ({args.workers} Ray Train workers)"),
            ):
                if not walls[name]:
                    continue
                w, b = median(walls[name]), median(boosts[name])
                out.append([f"{rows:,}", label, w, w / base_wall, b, b / base_boost])
    print(table(["rows", "command", "whole command s", "x native", "boosting s", "x native"], out))


if __name__ == "__main__":
    main()
