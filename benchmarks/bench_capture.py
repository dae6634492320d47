"""What serve.capture costs: the same taxi service with capture off and on, 16 clients, one record a request.

Both services run at once (the same spec, model and replicas), one writing every request and
answer (``serve.capture.fraction=1.0``, the worst case) or the share given to a temp folder;
rounds alternate between them so that drift of the machine hits both alike. Loopback only,
fixed request counts (benchmarks/loadgen.py). The aim (issue 32): capture costs at most 5% of
requests/s at 16 clients. Prints medians, the ratio to no capture, and what was captured.

    .venv/bin/python benchmarks/bench_capture.py                     # 20000 requests x 3 rounds
    .venv/bin/python benchmarks/bench_capture.py --fraction 0.1 --requests 5000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench_serve_xgboost import RECORD, SPEC, stop, wait
from common import BIN, median, table, timed
from loadgen import load

from rayline.serving.ports import free_port


def serve(env: dict[str, str], port: int, replicas: int, capture: list[str]) -> subprocess.Popen[bytes]:
    args = [str(BIN / "rayline"), "serve", SPEC, "--port", str(port), "--set", f"serve.num_replicas={replicas}",
            "--set", "serve.max_ongoing_requests=256", *capture]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=1.0)
    args = ap.parse_args()
    body = json.dumps(RECORD).encode()
    home = Path(tempfile.mkdtemp(prefix="rl-bench-capture-"))
    folder = home / "traffic"
    env = {**os.environ, "RAYLINE_HOME": str(home), "RAYLINE_NUM_CPUS": "2"}
    timed([str(BIN / "rayline"), "train", SPEC], env)
    capture = ["--set", f"serve.capture.fraction={args.fraction}", "--set", f"serve.capture.path={folder}"]
    ports = {"off": free_port(), "on": free_port()}
    services = {
        "off": serve(env, ports["off"], args.replicas, []),
        "on": serve(env, ports["on"], args.replicas, capture),
    }
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        for name, proc in services.items():
            wait(f"http://127.0.0.1:{ports[name]}", proc)
            load(f"http://127.0.0.1:{ports[name]}/predict", body, 16, 500)  # warm-up
        for _ in range(args.rounds):
            for name in ("off", "on"):
                result = load(f"http://127.0.0.1:{ports[name]}/predict", body, 16, args.requests).summary()
                runs[name].append(result)
    finally:
        for proc in services.values():
            stop(proc)  # the capturing replicas write what they hold on the way out
    from rayline.data.capture import read_capture

    captured = read_capture(str(folder)).num_rows if folder.exists() else 0
    base = median([r["rps"] for r in runs["off"]])
    rows: list[list[object]] = []
    for name, label in (("off", "no capture"), ("on", f"capture, fraction {args.fraction:g}")):
        rps = median([r["rps"] for r in runs[name]])
        p50 = median([r["p50_ms"] for r in runs[name]])
        p99 = median([r["p99_ms"] for r in runs[name]])
        rows.append([label, rps, rps / base, p50, p99])
    print(f"taxi, {args.replicas} replicas, 16 clients, {args.requests} requests x {args.rounds} rounds (alternating)")
    print(table(["service", "req/s", "x no capture", "p50 ms", "p99 ms"], rows))
    print(f"captured rows: {captured} (sent {args.rounds * args.requests + 500} to the capturing service)")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
