"""rayline serve (each ingress mode) vs plain uvicorn+FastAPI with the same booster, one record/request.

Loopback only, fixed request counts, raw keep-alive socket client (benchmarks/loadgen.py).
Runs alternate between the two servers; the table reports medians and ratios to plain.

    .venv/bin/python benchmarks/bench_serve_xgboost.py --modes haproxy proxy --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from common import BIN, REPO, median, table, timed
from loadgen import load

from rayline.serving.ports import free_port

RECORD = [
    {
        "passenger_count": 1,
        "trip_distance": 2.5,
        "fare_amount": 12.0,
        "trip_duration": 600,
        "hour": 18,
        "day_of_week": 3,
    }
]
SPEC = str(REPO / "examples" / "taxi.yaml")


def wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.args}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    time.sleep(3)  # let every replica register behind the balancer
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} never became healthy")


def stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM, not SIGINT: a process started from a shell without job control inherits SIGINT
    # ignored, and the service then never stopped (killed after 90 s, its HAProxy left running).
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(url: str, body: bytes, n16: int, n1: int) -> dict[str, float]:
    load(url + "/predict", body, 16, 500)  # warm-up
    many = load(url + "/predict", body, 16, n16).summary()
    one = load(url + "/predict", body, 1, n1).summary()
    return {
        "rps16": many["rps"],
        "p50_16": many["p50_ms"],
        "p99_16": many["p99_ms"],
        "rps1": one["rps"],
        "p50_1": one["p50_ms"],
        "p99_1": one["p99_ms"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", nargs="+", default=["haproxy", "proxy"])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    body = json.dumps(RECORD).encode()
    home = Path(tempfile.mkdtemp(prefix="rl-bench-serve-"))
    env = {**os.environ, "RAYLINE_HOME": str(home), "RAYLINE_NUM_CPUS": "2"}
    timed([str(BIN / "rayline"), "train", SPEC], env)
    os.environ["RAYLINE_HOME"] = str(home)
    from rayline.registry import Registry

    registry = Registry(home)
    run = registry.list_runs("taxi", kind="train", limit=1)[0]
    checkpoint = registry.checkpoint_dir(run.run_id)
    rows: list[list[object]] = []
    results: dict[str, list[dict[str, float]]] = {"plain": []}
    for mode in args.modes:
        results[mode] = []
        port = free_port()
        served = subprocess.Popen(
            [
                str(BIN / "rayline"),
                "serve",
                SPEC,
                "--port",
                str(port),
                "--set",
                f"serve.ingress={mode}",
                "--set",
                f"serve.num_replicas={args.replicas}",
                "--set",
                "serve.max_ongoing_requests=256",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait(f"http://127.0.0.1:{port}", served)
        for _ in range(args.repeats):
            plain_port = free_port()
            plain = subprocess.Popen(
                [str(BIN / "python"), str(REPO / "benchmarks" / "plain_serve.py"), str(checkpoint), str(plain_port)],
                env=env,
            )
            wait(f"http://127.0.0.1:{plain_port}", plain, 60)
            results["plain"].append(measure(f"http://127.0.0.1:{plain_port}", body, args.requests, args.requests // 8))
            stop(plain)
            results[mode].append(measure(f"http://127.0.0.1:{port}", body, args.requests, args.requests // 8))
        stop(served)
    base = {k: median([r[k] for r in results["plain"]]) for k in results["plain"][0]}
    for name, runs in results.items():
        m = {k: median([r[k] for r in runs]) for k in runs[0]}
        label = "plain uvicorn+FastAPI" if name == "plain" else f"rayline serve ({name}, {args.replicas} replicas)"
        rows.append(
            [
                label,
                m["rps16"],
                m["rps16"] / base["rps16"],
                m["p50_16"],
                m["p99_16"],
                m["p50_1"],
                m["p50_1"] / base["p50_1"],
                m["p99_1"],
            ]
        )
    print(
        table(["server", "req/s @16", "x plain", "p50 ms @16", "p99 ms @16", "p50 ms @1", "x plain", "p99 ms @1"], rows)
    )


if __name__ == "__main__":
    main()
