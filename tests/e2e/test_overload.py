"""Overload: a burst past what every replica holds (``serve.max_ongoing_requests`` in flight plus
``serve.max_queued_requests`` waiting) is answered 429 with ``Retry-After`` and rayline's JSON error
at once, every burst, not only the first; on /predict, the Open Inference Protocol's REST infer and
/predict/stream, and RESOURCE_EXHAUSTED over gRPC; never a 5xx, never a hang. The rest are answered 200.

Real services (``rayline serve``) of the tiny family trained with a delay, so each prediction holds
its replica for a known time, blocking its event loop as a CPU model does: the default ingress
(HAProxy) with the fused topology, then the composed topology behind Serve's proxy and on its
ingress replica's own port (``serve.ingress: direct``). Loopback only, bounded in count and time."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tablesets
from rayline.serving.ports import free_port
from service import SCRIPT, serving

pytestmark = pytest.mark.slow
BURST = 16  # clients at once; a replica holds 1 + 2
DELAY_S = 0.1  # each prediction call of the model
RETRY_AFTER = 3
REFUSED = {
    "error": f"the service is at capacity: every replica is busy and its queue is full; retry after {RETRY_AFTER} s"
}


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None = None
    content_type: str | None = None
    body: bytes = b""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The spec of a model that takes ``DELAY_S`` per prediction, trained; the environment to serve it."""
    root = tmp_path_factory.mktemp("overload")
    env = {**os.environ, "RAYLINE_HOME": str(root / "home")}
    env.pop("RAY_ADDRESS", None)
    source = tablesets.make_table("binary", root / "data", rows=200)
    spec = root / "slow.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "slow",
                "data": {"source": str(source), "label": tablesets.LABELS["binary"]},
                "model": {"family": "tiny", "delay_s": DELAY_S},
                "serve": {
                    "num_replicas": 1,
                    "num_cpus": 0.25,
                    "max_ongoing_requests": 1,
                    "max_queued_requests": 2,
                    "retry_after_s": RETRY_AFTER,
                },
            }
        )
    )
    done = subprocess.run([str(SCRIPT), "train", str(spec)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return spec, env


def answers_again(url: str) -> None:
    """Once the burst is over the service answers: no replica was marked down, nothing is left queued."""
    body = json.dumps(_records()).encode()
    deadline = time.monotonic() + 10
    while (status := post(f"{url}/predict", body).status) != 200 and time.monotonic() < deadline:
        time.sleep(DELAY_S)
    assert status == 200


def _replica_url(first: int, last: int) -> str:
    """The composed ingress replica's own HTTP server (direct ingress), on a port of ``first..last``."""
    for port in range(first, last + 1):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthz", timeout=5) as resp:
                if resp.status == 200:
                    return f"http://127.0.0.1:{port}"
        except OSError:
            continue
    raise AssertionError(f"no replica listens on {first}-{last}")


# First in the module: its service stops before the module's shared one starts (two at once would
# share two cores).
def test_composed_topology_sheds_behind_the_proxy_and_on_the_replica(trained: tuple[Path, dict[str, str]]) -> None:
    """The ingress deployment calls the model deployment by handle: a burst past the model's pace fills
    the ingress's queue and is refused there (Serve's proxy on --port, the replica's own port), not
    answered 500 from inside a request, not held."""
    spec, env = trained
    first = free_port()
    ports = {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(first),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(first + 9),
    }
    args = [str(spec), "--set", "serve.topology=composed", "--set", "serve.ingress=direct"]
    with serving(args, {**env, **ports}) as (url, _):
        body = json.dumps(_records()).encode()
        replica = _replica_url(first, first + 9)
        for front in (url, url, replica, replica):
            shed(burst(lambda front=front: post(f"{front}/predict", body)))
        answers_again(url)


@pytest.fixture(scope="module")
def service(trained: tuple[Path, dict[str, str]]) -> Iterator[tuple[str, int]]:
    """The default ingress (HAProxy) and topology (fused), with the protocol over gRPC."""
    spec, env = trained
    grpc_port = free_port()
    with serving([str(spec), "--set", f"serve.grpc_port={grpc_port}"], env) as (url, _):
        yield url, grpc_port


def burst(call: Callable[[], Answer]) -> list[Answer]:
    """``BURST`` calls released together, each on a new connection."""
    gate = threading.Barrier(BURST)
    out: list[Answer] = []

    def one() -> None:
        gate.wait(timeout=30)
        out.append(call())

    threads = [threading.Thread(target=one) for _ in range(BURST)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    # One by one, 16 would take 1.6 s; held and answered late, they are no refusal.
    assert time.monotonic() - start < 30, "the burst took too long: requests were held, not refused"
    assert len(out) == BURST
    return out


def post(url: str, body: bytes, content_type: str = "application/json") -> Answer:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return Answer(resp.status, content_type=resp.headers.get_content_type(), body=resp.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.headers.get("Retry-After"), err.headers.get_content_type(), err.read())


def _records() -> list[dict[str, Any]]:
    rows = tablesets.frame("binary", rows=3).drop(columns=[tablesets.LABELS["binary"]])
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows.to_dict("records")]


def shed(answers: list[Answer]) -> None:
    """Some answered, the rest refused at once: 429, the spec's Retry-After, rayline's JSON error."""
    statuses = sorted(a.status for a in answers)
    assert set(statuses) <= {200, 429}, statuses
    # A replica holds 3; a request or two more may slip in as one finishes.
    assert 1 <= statuses.count(200) <= 6 and statuses.count(429) >= BURST - 6, statuses
    for refused in (a for a in answers if a.status == 429):
        assert refused.retry_after == str(RETRY_AFTER)
        assert refused.content_type == "application/json" and json.loads(refused.body) == REFUSED


def test_predict_sheds_every_burst_with_429(service: tuple[str, int]) -> None:
    """Bursts one right after the other: new connections and reused ones alike are refused."""
    url, _ = service
    body = json.dumps(_records()).encode()
    for _ in range(3):
        shed(burst(lambda: post(f"{url}/predict", body)))


def test_stream_sheds_a_burst_with_429(service: tuple[str, int]) -> None:
    url, _ = service
    lines = "".join(json.dumps(r) + "\n" for r in _records()).encode()
    shed(burst(lambda: post(f"{url}/predict/stream", lines, "application/x-ndjson")))


def _tensors() -> dict[str, Any]:
    records = _records()
    inputs = []
    for name in records[0]:
        values = [r[name] for r in records]
        if isinstance(values[0], str):
            inputs.append({"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values})
        elif isinstance(values[0], int):
            inputs.append({"name": name, "datatype": "INT64", "shape": [len(values)], "data": values})
        else:
            inputs.append({"name": name, "datatype": "FP64", "shape": [len(values)], "data": values})
    return {"inputs": inputs}


def test_open_inference_protocol_sheds_a_burst(service: tuple[str, int]) -> None:
    """REST infer: 429 with Retry-After and the protocol's ``{"error": ...}``; gRPC ModelInfer: RESOURCE_EXHAUSTED."""
    url, grpc_port = service
    body = json.dumps(_tensors()).encode()
    assert post(f"{url}/v2/models/slow/infer", body).status == 200  # the body is right: only load refuses it below
    shed(burst(lambda: post(f"{url}/v2/models/slow/infer", body)))

    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    columns = {
        t["name"]: np.asarray(t["data"], dtype=object if t["datatype"] == "BYTES" else None)
        for t in _tensors()["inputs"]
    }

    def infer() -> Answer:
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        inputs = []
        for name, array in columns.items():
            tensor = tgrpc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            client.infer("slow", inputs, client_timeout=30)
            return Answer(200)
        except InferenceServerException as err:
            return Answer(429 if "RESOURCE_EXHAUSTED" in str(err.status()) else 500, body=str(err).encode())
        finally:
            client.close()

    answers = burst(infer)
    statuses = sorted(a.status for a in answers)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 1 and statuses.count(429) >= BURST // 2, statuses
    # HAProxy's refusal at the door says why; a replica's is Serve's own
    why = {REFUSED["error"], "Request dropped due to backpressure"}
    assert all(any(w in a.body.decode() for w in why) for a in answers if a.status == 429), answers


def test_answers_again_once_the_burst_is_over(service: tuple[str, int]) -> None:
    answers_again(service[0])
