"""rayline serve (examples/mnist.yaml) vs plain uvicorn+FastAPI, same ResNet18 checkpoint, one digit/request.

16 concurrent keep-alive clients (benchmarks/loadgen.py), a fixed request count, each request
``{"image": [<28x28 array of 0-255 ints>]}`` to POST /predict. Plain: one process, unbatched
(one forward pass per request), measured with 2 and with 1 torch threads; the better one is the
baseline. rayline: the spec's serving settings (dynamic batching, autoscaled replicas), plus any
``--set``, in each ``serve.topology`` (fused: one deployment decodes and predicts; composed: the
course's ingress -> preprocessor -> model). Each repeat starts fresh servers, one at a time, so
none runs beside another.

    .venv/bin/python benchmarks/bench_serve_resnet.py --requests 3000 --repeats 3
    .venv/bin/python benchmarks/bench_serve_resnet.py --quick     # 200 requests, once
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from bench_serve_xgboost import stop, wait
from bench_train_resnet import ENV, SPEC, export_digits, train_once
from common import BIN, REPO, median, table
from loadgen import load

from rayline.serving.ports import free_port


def body() -> bytes:
    from rayline.datasets.mnist import load_mnist

    images, _ = load_mnist()
    return json.dumps({"image": [images[0].tolist()]}).encode()


def check(url: str, payload: bytes) -> None:
    """One request by hand: it must answer 200 with exactly one prediction."""
    request = urllib.request.Request(url + "/predict", payload, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer = json.loads(resp.read())
    if len(answer.get("predictions", [])) != 1:
        raise SystemExit(f"{url}/predict answered {answer}")


def measure(url: str, payload: bytes, requests: int) -> dict[str, float]:
    check(url, payload)
    load(url + "/predict", payload, 16, max(160, requests // 6), 300)  # warm-up (and let replicas scale)
    result = load(url + "/predict", payload, 16, requests, 300)
    if result.errors or result.requests < requests:
        raise SystemExit(f"{url}: {result.errors} errors, {result.requests} of {requests} requests answered")
    return result.summary()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra rayline --set KEY=VALUE")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 digits per class, 200 requests, once")
    ap.add_argument("--topologies", default="fused,composed", help="serve.topology values to measure")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.repeats = 200, 1
    args.requests -= args.requests % 16  # loadgen sends requests // 16 per client
    payload = body()
    topologies = [t.strip() for t in args.topologies.split(",") if t.strip()]
    results: dict[str, list[dict[str, float]]] = {"plain 2": [], "plain 1": [], **{t: [] for t in topologies}}
    with tempfile.TemporaryDirectory(prefix="rl-bench-serve-resnet-") as name:
        tmp = Path(name)
        home = tmp / "home"
        digits = export_digits(tmp, 50 if args.quick else None)
        run_id, checkpoint = train_once(home, digits, args.quick)
        env = {**os.environ, **ENV, "RAYLINE_HOME": str(home)}
        # The plain server runs the model in the precision rayline serves it in.
        precision = next((s.split("=", 1)[1] for s in args.sets if s.startswith("serve.precision=")), "float32")
        for _ in range(args.repeats):
            for threads in (2, 1):
                port = free_port()
                cmd = [str(BIN / "python"), str(REPO / "benchmarks" / "plain_serve_resnet.py"), str(checkpoint)]
                plain = subprocess.Popen([*cmd, str(port), str(threads), precision], env=env)
                try:
                    wait(f"http://127.0.0.1:{port}", plain, 120)
                    results[f"plain {threads}"].append(measure(f"http://127.0.0.1:{port}", payload, args.requests))
                finally:
                    stop(plain)
            for topology in topologies:
                port = free_port()
                cmd = [str(BIN / "rayline"), "serve", SPEC, "--model", run_id, "--port", str(port)]
                for item in [*args.sets, f"serve.topology={topology}"]:
                    cmd += ["--set", item]
                served = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    wait(f"http://127.0.0.1:{port}", served)
                    results[topology].append(measure(f"http://127.0.0.1:{port}", payload, args.requests))
                finally:
                    stop(served)
    medians = {n: {k: median([r[k] for r in runs]) for k in runs[0]} for n, runs in results.items()}
    best = max(("plain 2", "plain 1"), key=lambda n: medians[n]["rps"])
    labels = {
        "plain 2": f"plain uvicorn+FastAPI (unbatched, 2 torch threads, {precision})",
        "plain 1": f"plain uvicorn+FastAPI (unbatched, 1 torch thread, {precision})",
        **{
            t: f"rayline serve (examples/mnist.yaml, {t}" + "".join(f", {s}" for s in args.sets) + ")"
            for t in topologies
        },
    }
    rows = [
        [labels[n], m["rps"], m["rps"] / medians[best]["rps"], m["p50_ms"], m["p99_ms"]] for n, m in medians.items()
    ]
    print(f"{args.requests:,} requests at 16 clients, {args.repeats} repeat(s); baseline: {labels[best]}")
    print("goal: rayline fused >= 3x plain req/s")
    print(table(["server", "req/s", "x plain", "p50 ms", "p99 ms"], rows))


if __name__ == "__main__":
    main()
