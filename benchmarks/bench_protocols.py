"""One served model, three protocols: rayline's /predict, the Open Inference Protocol over REST
(JSON tensors) and over gRPC. Taxi (one record per request) and mnist (one 28x28 digit per
request), 16 clients and 1 client, one replica each, HAProxy ingress. The protocols alternate
within each repeat; the table reports medians and the ratio to /predict.

    .venv/bin/python benchmarks/bench_protocols.py --repeats 3

HTTP load comes from benchmarks/loadgen.py (raw keep-alive sockets); gRPC load from ``grpc.aio``
with the request serialised once and sent as bytes (no per-call protobuf work in the client),
on one channel per client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from bench_serve_xgboost import stop, wait
from common import BIN, REPO, median, table, timed
from loadgen import LoadResult, load

from rayline.serving.ports import free_port

TAXI = {
    "passenger_count": 1.0,
    "trip_distance": 2.5,
    "fare_amount": 12.0,
    "trip_duration": 600,
    "hour": 18,
    "day_of_week": 3,
}


def oip_json(name: str, arrays: dict[str, np.ndarray], datatypes: dict[str, str]) -> bytes:
    tensors = [
        {"name": k, "datatype": datatypes[k], "shape": list(v.shape), "data": v.reshape(-1).tolist()}
        for k, v in arrays.items()
    ]
    return json.dumps({"inputs": tensors}).encode()


def oip_grpc(model: str, arrays: dict[str, np.ndarray], datatypes: dict[str, str]) -> bytes:
    """A serialised ModelInferRequest (raw tensor contents, as tritonclient sends them)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in arrays.items():
        tensor = request.inputs.add(name=name, datatype=datatypes[name])
        tensor.shape.extend(array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return bytes(request.SerializeToString())


async def _grpc_run(address: str, payload: bytes, concurrency: int, total: int, timeout_s: float) -> LoadResult:
    import grpc

    counts = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    lat: list[float] = []
    deadline = time.perf_counter() + timeout_s

    async def worker(n: int) -> int:
        errors = 0
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            for _ in range(n):
                if time.perf_counter() > deadline:
                    break
                start = time.perf_counter()
                try:
                    await call(payload)
                except grpc.aio.AioRpcError:
                    errors += 1
                lat.append((time.perf_counter() - start) * 1000)
        return errors

    start = time.perf_counter()
    errors = await asyncio.gather(*(worker(n) for n in counts if n))
    return LoadResult(len(lat), sum(errors), time.perf_counter() - start, lat)


def grpc_load(address: str, payload: bytes, concurrency: int, total: int) -> LoadResult:
    return asyncio.run(_grpc_run(address, payload, concurrency, total, 120.0))


def serve(spec: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str]:
    port, grpc_port = free_port(), free_port()
    args = [str(BIN / "rayline"), "serve", *spec, "--port", str(port), "--set", f"serve.grpc_port={grpc_port}"]
    args += [
        "--set",
        "serve.num_replicas=1",
        "--set",
        "serve.autoscaling=null",
        "--set",
        "serve.max_ongoing_requests=256",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait(url, proc)
    return proc, url, f"127.0.0.1:{grpc_port}"


def measure(name: str, run: Any, n16: int, n1: int) -> dict[str, float]:
    run(16, 200)  # warm-up
    many, one = run(16, n16).summary(), run(1, n1).summary()
    if many["errors"] or one["errors"]:
        raise SystemExit(f"{name}: {many['errors'] + one['errors']} errors")
    return {"rps16": many["rps"], "p50_16": many["p50_ms"], "rps1": one["rps"], "p50_1": one["p50_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["taxi", "mnist"], choices=["taxi", "mnist"])
    ap.add_argument("--requests", type=int, default=4000, help="per measurement with 16 clients (1 client: a quarter)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rl-bench-protocols-"))
    env = {**os.environ, "RAYLINE_HOME": str(tmp / "home"), "RAYLINE_NUM_CPUS": "2"}
    env.pop("RAY_ADDRESS", None)
    from rayline.datasets.mnist import export_png

    digits = export_png(tmp / "home" / "data" / "mnist")
    small = tmp / "digits"
    for label in sorted(p for p in digits.iterdir() if p.is_dir()):
        (small / label.name).mkdir(parents=True)
        for png in sorted(label.glob("*.png"))[:20]:
            shutil.copy(png, small / label.name / png.name)
    specs = {
        "taxi": [str(REPO / "examples" / "taxi.yaml"), "--set", "data.rows=4000"],
        "mnist": [str(REPO / "examples" / "mnist.yaml"), "--set", f"data.source={small}", "--set", "model.epochs=1"],
    }
    image = np.asarray(json.loads(json.dumps(np.zeros((28, 28), np.uint8).tolist())), dtype=np.uint8)
    image[8:20, 13:15] = 255  # a "1"
    columns = {k: np.array([v], dtype=np.int64 if isinstance(v, int) else np.float64) for k, v in TAXI.items()}
    inputs = {
        "taxi": ([TAXI], columns, {k: "INT64" if v.dtype == np.int64 else "FP64" for k, v in columns.items()}),
        "mnist": ({"image": [image.tolist()]}, {"image": image[None]}, {"image": "UINT8"}),
    }
    rows: list[list[object]] = []
    n16, n1 = args.requests, args.requests // 4
    for model, spec in ((m, specs[m]) for m in args.models):
        timed([str(BIN / "rayline"), "train", *spec], env)
        proc, url, address = serve(spec, env)
        try:
            body, arrays, datatypes = inputs[model]
            predict_body, rest_body = json.dumps(body).encode(), oip_json(model, arrays, datatypes)
            grpc_body, infer_url = oip_grpc(model, arrays, datatypes), f"{url}/v2/models/{model}/infer"
            runs = {
                "/predict (JSON)": partial(load, f"{url}/predict", predict_body),
                "Open Inference Protocol, REST (JSON tensors)": partial(load, infer_url, rest_body),
                "Open Inference Protocol, gRPC": partial(grpc_load, address, grpc_body),
            }
            results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    results[name].append(measure(name, run, n16, n1))
        finally:
            stop(proc)
        base = {k: median([r[k] for r in results["/predict (JSON)"]]) for k in ("rps16", "rps1")}
        for name, found in results.items():
            m = {k: median([r[k] for r in found]) for k in found[0]}
            rows.append(
                [
                    model,
                    name,
                    m["rps16"],
                    m["rps16"] / base["rps16"],
                    m["p50_16"],
                    m["rps1"],
                    m["rps1"] / base["rps1"],
                    m["p50_1"],
                ]
            )
    print(
        table(
            ["model", "protocol", "req/s (16)", "x /predict", "p50 ms (16)", "req/s (1)", "x /predict", "p50 ms (1)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
