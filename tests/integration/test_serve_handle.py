"""The Python side of serving: rayline.serve() in a running Ray, the deployment handle, options."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rayline
import tablesets
from inprocess import own_home
from rayline.serving.config import deployment_options
from rayline.spec import spec_from_dict
from service import free_port

# A row of tablesets' binary table (label clicked; color a category).
RECORD = {"x1": 0.4, "x2": -1.1, "count": 3, "color": "red"}
SERVE = {"num_replicas": 1, "num_cpus": 0.25}


@dataclass(frozen=True)
class Served:
    service: Any
    offline: pd.DataFrame  # rayline.predict's rows for the model served (the batch path)


@pytest.fixture(scope="class")
def binary(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One binary table model, trained, batch-predicted and served once for the class's tests,
    which only read it (starting Serve and a replica is most of such a test's seconds)."""
    root = tmp_path_factory.mktemp("handle")
    with own_home(root):
        source = tablesets.make_table("binary", root / "data")
        spec = tablesets.spec_for("binary", source, name="handle", serve={**SERVE, "max_batch_size": 8})
        rayline.train(spec)
        offline = pd.read_parquet(rayline.predict(spec, model="latest").output).head(25)
        service = rayline.serve(spec, port=free_port())
        try:
            yield Served(service, offline)
        finally:
            # Serve with it: the next test's rayline.serve gets a new port (Serve would keep this one).
            service.stop()


def assert_serves_what_batch_predict_writes(kind: tablesets.Kind, url: str, offline: pd.DataFrame) -> None:
    """The serving hot path (records -> matrix -> dicts) against the batch path (DataFrames)."""
    rows = offline[list(tablesets.frame(kind).columns)]  # as the table has them, label included
    body = rows.to_json(orient="records").encode()
    request = urllib.request.Request(f"{url}/predict", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as resp:
        served = json.loads(resp.read())["predictions"]
    assert len(served) == len(offline)
    if kind == "regression":
        assert set(served[0]) == {"prediction"}
        np.testing.assert_allclose([r["prediction"] for r in served], offline["prediction"], rtol=1e-5)
        return
    assert [r["label"] for r in served] == offline["predicted_label"].tolist()
    np.testing.assert_allclose([r["probability"] for r in served], offline["probability"], rtol=1e-5)
    if kind == "binary":
        assert all(type(r["label"]) is int for r in served)  # the table's 0/1 ints, not strings
    else:
        for r in served:
            assert list(r["probabilities"]) == tablesets.CLASSES
            assert max(r["probabilities"].values()) == r["probability"]
            assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


class TestOneTableService:
    """Tests that share the ``binary`` service; it stops when the class ends, before the next test serves."""

    def test_handle_predicts_like_http(self, binary: Served) -> None:
        service = binary.service
        from_handle = service.handle.predict.remote([RECORD]).result(timeout_s=60)
        request = urllib.request.Request(f"{service.url}/predict", data=json.dumps([RECORD]).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as resp:
            from_http = json.loads(resp.read())["predictions"]
        assert from_handle == from_http
        assert 0.0 <= from_handle[0]["probability"] <= 1.0
        # Serve's per-request access log is off by default (serve.access_log): no line per request
        import ray

        logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
        replica_logs = list(logs.glob("replica_handle_model_*.log"))
        assert replica_logs, sorted(p.name for p in logs.iterdir())
        assert not any("POST /predict 200" in p.read_text() for p in replica_logs)

    def test_handle_validates_input(self, binary: Served) -> None:
        with pytest.raises(Exception, match="x1"):
            binary.service.handle.predict.remote([{**RECORD, "x1": "far"}]).result(timeout_s=60)

    def test_lone_requests_skip_the_batch_queue_concurrent_ones_batch(self, binary: Served) -> None:
        service = binary.service

        def batching() -> dict[str, int]:
            with urllib.request.urlopen(f"{service.url}/healthz", timeout=30) as resp:
                return dict(json.loads(resp.read())["batching"])

        def post_one() -> None:
            body = json.dumps([RECORD]).encode()
            request = urllib.request.Request(f"{service.url}/predict", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=60) as resp:
                assert resp.status == 200

        before = batching()
        for _ in range(5):
            post_one()
        alone = batching()
        assert alone["alone"] - before["alone"] == 5
        assert alone["batches"] == before["batches"]

        # 16 requests written at once on open keep-alive connections reach the replica together.
        async def burst(n: int) -> list[bytes]:
            host, port = service.url.split("//")[1].split(":")
            body = json.dumps([RECORD]).encode()
            head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            conns = [await asyncio.open_connection(host, int(port)) for _ in range(n)]
            for _, writer in conns:
                writer.write(head + body)
            heads = [await reader.readuntil(b"\r\n\r\n") for reader, _ in conns]
            for _, writer in conns:
                writer.close()
            return heads

        heads = asyncio.run(burst(16))
        assert all(h.startswith(b"HTTP/1.1 200") for h in heads), heads
        after = batching()
        assert after["requests"] - alone["requests"] + after["alone"] - alone["alone"] == 16
        assert after["largest"] > 1, after

    def test_binary_table_serves_what_batch_predict_writes(self, binary: Served) -> None:
        assert_serves_what_batch_predict_writes("binary", binary.service.url, binary.offline)


@pytest.mark.parametrize("kind", ["multiclass", "regression"])  # binary: TestOneTableService
def test_any_table_serves_what_batch_predict_writes(
    ray_session: Any, rayline_home: Path, tmp_path: Path, kind: tablesets.Kind
) -> None:
    source = tablesets.make_table(kind, tmp_path / "data")
    spec = tablesets.spec_for(kind, source, name=f"srv-{kind}", serve=SERVE)
    rayline.train(spec)
    offline = pd.read_parquet(rayline.predict(spec, model="latest").output).head(25)
    svc = rayline.serve(spec, port=free_port())
    try:
        assert_serves_what_batch_predict_writes(kind, svc.url, offline)
    finally:
        svc.stop()


def test_deployment_options_from_spec() -> None:
    spec = spec_from_dict(
        {
            "name": "opts",
            "data": {"source": "builtin:taxi", "label": "is_big_tip"},
            "model": {"family": "xgboost"},
            "serve": {
                "num_cpus": 0.5,
                "num_gpus": 0.25,
                "max_ongoing_requests": 99,
                "autoscaling": {
                    "min_replicas": 0,
                    "max_replicas": 4,
                    "initial_replicas": 1,
                    "target_ongoing_requests": 3,
                    "upscale_delay_s": 0,
                },
            },
        }
    )
    options = deployment_options(spec.serve)
    assert options["logging_config"] == {"enable_access_log": False}
    assert deployment_options(spec.serve.model_copy(update={"access_log": True}))["logging_config"] == {
        "enable_access_log": True
    }
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert options["max_ongoing_requests"] == 99 and "num_replicas" not in options
    auto = options["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["initial_replicas"]) == (0, 4, 1)
    assert auto["target_ongoing_requests"] == 3 and auto["upscale_delay_s"] == 0
    # Serve itself accepts them
    from ray.serve.config import AutoscalingConfig

    AutoscalingConfig(**auto)
    from ray.serve.schema import LoggingConfig

    LoggingConfig(**options["logging_config"])


@dataclass(frozen=True)
class Digits:
    home: Path
    source: Path
    run_id: str


DIGITS = "digits-srv"  # the registered model (and so the Serve application) of every image test here


@pytest.fixture(scope="module")
def digits(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Digits]:
    """One small digits model (classes 2 and 6) for the image tests, each of which serves it its own way."""
    import imagesets

    root = tmp_path_factory.mktemp("digits")
    with own_home(root) as home:
        source = imagesets.digits(root / "digits", per_class=10, classes=[2, 6])
        run = rayline.train(imagesets.spec_for(source, name=DIGITS))
        yield Digits(home, source, run.run_id)


def image_spec(digits: Digits, monkeypatch: pytest.MonkeyPatch, **serve: Any) -> rayline.Spec:
    """The digits model's spec with these serve options, its registry this test's."""
    import imagesets

    monkeypatch.setenv("RAYLINE_HOME", str(digits.home))
    return imagesets.spec_for(digits.source, name=DIGITS, serve={**SERVE, **serve})


def test_image_handle_predicts_like_http(digits: Digits, monkeypatch: pytest.MonkeyPatch) -> None:
    import imagesets

    service = rayline.serve(image_spec(digits, monkeypatch), port=free_port())
    try:
        image = (imagesets.digit_array(6)).tolist()
        from_handle = service.handle.predict.remote([image]).result(timeout_s=60)
        body = json.dumps({"image": [image]}).encode()
        request = urllib.request.Request(f"{service.url}/predict", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=60) as resp:
            from_http = json.loads(resp.read())["predictions"]
        assert from_handle == from_http and set(from_handle[0]["probabilities"]) == {"2", "6"}
        with pytest.raises(Exception, match=r"image\.0\.pixels\.0\n.*at least 28 items"):
            service.handle.predict.remote([[[1, 2], [3, 4]]]).result(timeout_s=60)
    finally:
        service.stop()


def test_every_image_model_replica_serves(digits: Digits, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model replica that joins (autoscaling, or the second of two) takes requests too.

    Serve sends a request that names a model (here always: the served run) to the replicas that
    report that model loaded; a replica that never loaded it used to get no traffic at all."""
    import time

    import ray

    import imagesets

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
    pattern = f"replica_{DIGITS}_model_*.log"
    earlier = set(logs.glob(pattern))  # the replicas of this model that other tests served
    # The composed topology: its model deployment is called through handles with a model id.
    spec = image_spec(digits, monkeypatch, num_replicas=2, access_log=True, topology="composed")
    service = rayline.serve(spec, port=free_port())
    try:
        image = imagesets.digit_array(4).tolist()

        def serving_replicas() -> int:
            files = set(logs.glob(pattern)) - earlier
            return sum("CALL __call__ OK" in p.read_text() for p in files)

        # One request first, as a service's first user sends: the replica it lands on reports
        # the model loaded; then concurrent waves, which must reach the other replica too.
        first = service.handle.predict.remote([image]).result(timeout_s=60)
        # The composed ingress speaks the Open Inference Protocol too (JSON tensors here).
        tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": image}
        request = urllib.request.Request(
            f"{service.url}/v2/models/{DIGITS}/infer", data=json.dumps({"inputs": [tensor]}).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            outputs = {o["name"]: o["data"] for o in json.loads(resp.read())["outputs"]}
        assert outputs["label"] == [first[0]["label"]]
        assert outputs["probability"] == pytest.approx([first[0]["probability"]], abs=1e-6)
        deadline = time.monotonic() + 30
        while serving_replicas() < 2 and time.monotonic() < deadline:
            calls = [service.handle.predict.remote([image]) for _ in range(40)]
            assert all(len(c.result(timeout_s=60)) == 1 for c in calls)
        assert serving_replicas() == 2
    finally:
        service.stop()


def test_image_model_serves_in_bfloat16(digits: Digits, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve.precision: bfloat16`` answers close to the float32 model (and not bit-identical)."""
    import imagesets
    from rayline.families.resnet.family import ResNetPredictor

    spec = image_spec(digits, monkeypatch, precision="bfloat16")
    images = [imagesets.digit_array(label, n) for label in (2, 6) for n in range(3)]
    checkpoint = rayline.open_registry().checkpoint_dir(digits.run_id)
    exact = ResNetPredictor(checkpoint).probabilities(np.stack(images)[:, None])
    service = rayline.serve(spec, port=free_port())
    try:
        served = service.handle.predict.remote([image.tolist() for image in images]).result(timeout_s=60)
    finally:
        service.stop()
    reduced = np.array([[p["probabilities"][c] for c in ("2", "6")] for p in served])
    assert not np.array_equal(reduced, exact)
    np.testing.assert_allclose(reduced, exact, atol=0.05)
