"""``POST /explain`` through the composed topology (ingress -> preprocessor -> model replicas),
over HTTP and through the deployment handle; and a run of a family without explanations (the
tiny test family), named per request, answered with a 400."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rayline
import tablesets
from rayline.spec import spec_from_dict
from service import free_port


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def served(ray_session: Any, rayline_home: Path, tmp_path: Path) -> Iterator[tuple[Any, str, list[dict[str, Any]]]]:
    """The binary table (categorical ``color``) served composed with xgboost; a tiny run of the same spec."""
    source = tablesets.make_table("binary", tmp_path / "data", rows=400)
    raw = tablesets.spec_dict("binary", source, name="explain-composed")
    raw["serve"] = {"num_replicas": 1, "num_cpus": 0.25, "topology": "composed"}
    xgb = rayline.train(spec_from_dict(raw))
    tiny = rayline.train(spec_from_dict({**raw, "model": {"family": "tiny"}}))
    frame = tablesets.frame("binary", rows=5, seed=9).drop(columns=[tablesets.LABELS["binary"]])
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in frame.to_dict("records")]
    service = rayline.serve(spec_from_dict(raw), model=xgb.run_id, port=free_port())
    try:
        yield service, tiny.run_id, records
    finally:
        from ray import serve

        serve.shutdown()  # release the replicas' CPUs for later tests in this Ray


def test_composed_explains_like_it_predicts(served: tuple[Any, str, list[dict[str, Any]]]) -> None:
    service, tiny_run, records = served
    status, predicted = post(f"{service.url}/predict", records)
    assert status == 200
    status, body = post(f"{service.url}/explain", records)
    assert status == 200, body
    assert body["model"] == predicted["model"] and len(body["explanations"]) == len(records)
    for explanation, prediction in zip(body["explanations"], predicted["predictions"], strict=True):
        assert list(explanation["contributions"]) == ["x1", "x2", "count", "color"]
        total = explanation["bias"] + sum(explanation["contributions"].values())
        assert total == pytest.approx(explanation["margin"], abs=1e-4)
        p = prediction["probability"]
        assert explanation["margin"] == pytest.approx(np.log(p / (1 - p)), abs=1e-4)
    # the handle answers the same, validated the same
    from_handle = service.handle.explain.remote(records).result(timeout_s=60)
    assert from_handle == body["explanations"]
    # errors: the body's, the model's
    status, bad = post(f"{service.url}/explain", [{**records[0], "x1": "far"}])
    assert status == 422 and bad["error"].startswith("0.x1")
    status, refused = post(f"{service.url}/explain", records, {"serve_multiplexed_model_id": tiny_run})
    assert status == 400 and refused == {"error": f"model run {tiny_run} (tiny) has no explanations"}
    # ...while the tiny run still predicts
    status, other = post(f"{service.url}/predict", records, {"serve_multiplexed_model_id": tiny_run})
    assert status == 200 and other["model"] == tiny_run
    # Live drift in the composed topology: the model replica counts what the primary answered,
    # and the ingress's /healthz asks it (5 rows so far; then 300 more from the training data's maker).
    more = tablesets.frame("binary", rows=300, seed=10).drop(columns=[tablesets.LABELS["binary"]])
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in more.to_dict("records")]
    status, _ = post(f"{service.url}/predict", rows)
    assert status == 200
    with urllib.request.urlopen(f"{service.url}/healthz", timeout=60) as resp:
        drift = json.loads(resp.read())["drift"]
    assert (
        drift["rows"] == 305
        and drift["status"] in ("ok", "drift")
        and set(drift["psi"]) == {"x1", "x2", "count", "color"}
    )
