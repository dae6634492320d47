"""The Open Inference Protocol's REST routes on the ingress app on its own (no Ray): which error
a request gets when several things are wrong with it (the model is looked up first)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rayline.data import get_kind
from rayline.errors import RegistryError
from rayline.serving._http import build_api
from rayline.serving.oip.service import OIPModel

META = {
    "family": "xgboost",
    "data_kind": "table",
    "layout": {
        "features": ["distance"],
        "label": "tip",
        "task": "binary",
        "classes": [False, True],
        "categorical": {},
        "dtypes": {"distance": "double", "tip": "bool"},
        "missing": False,
    },
}


class FakeServed:
    """``Served`` for one table model, run1 (``resolve`` knows no other run)."""

    kind = get_kind("table")

    async def resolve(self, model_id: str | None) -> str:
        if model_id in (None, "run1"):
            return "run1"
        raise RegistryError(f"model {model_id!r}: no such run")

    async def meta_of(self, run_id: str) -> dict[str, Any]:
        return META


async def predict_items(items: list[Any], run_id: str) -> list[dict[str, Any]]:
    return [{"label": True, "probability": 0.75} for _ in items]


class Body(BaseModel):
    values: list[float]


async def predict(body: Body, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    return "run1", []


@pytest.fixture
def client() -> TestClient:
    oip = OIPModel("taxi", FakeServed(), predict_items)  # type: ignore[arg-type]
    app = build_api(
        title="t",
        body_model=Body,
        predict=predict,
        info={"model_run_id": "run1"},
        api_key=None,
        max_request_bytes=10_000,
        oip=oip,
    )
    return TestClient(app)


GOOD = {"inputs": [{"name": "distance", "datatype": "FP64", "shape": [2], "data": [1.5, 2.5]}]}
BAD_BODIES: list[Any] = [
    {"inputs": []},
    {"inputs": [{"name": "distance", "datatype": "FP64"}]},
    {"inputs": [{"name": "tip", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
    {},
    "not an object",
]


def test_a_good_request_is_answered(client: TestClient) -> None:
    answer = client.post("/v2/models/taxi/infer", json=GOOD)
    assert answer.status_code == 200
    body = answer.json()
    assert body["model_name"] == "taxi" and body["model_version"] == "run1"
    assert {o["name"] for o in body["outputs"]} == {"label", "probability"}


@pytest.mark.parametrize("body", BAD_BODIES)
def test_an_unknown_model_is_404_whatever_the_body(client: TestClient, body: Any) -> None:
    for path in ("/v2/models/nope/infer", "/v2/models/nope/versions/run1/infer", "/v2/models/taxi/versions/run9/infer"):
        answer = client.post(path, json=body)
        assert answer.status_code == 404, (path, answer.text)
        assert set(answer.json()) == {"error"}
    named = client.post("/v2/models/nope/infer", json=body).json()["error"]
    assert "unknown model 'nope'" in named and "'taxi'" in named
    assert "run9" in client.post("/v2/models/taxi/versions/run9/infer", json=body).json()["error"]


def test_an_unknown_model_is_404_with_a_bad_binary_header_or_no_json(client: TestClient) -> None:
    bad_header = client.post(
        "/v2/models/nope/infer", content=b"{}", headers={"Inference-Header-Content-Length": "lots"}
    )
    assert bad_header.status_code == 404 and "unknown model" in bad_header.json()["error"]
    no_json = client.post("/v2/models/nope/infer", content=b"{no")
    assert no_json.status_code == 404 and "unknown model" in no_json.json()["error"]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_bad_body_for_the_served_model_is_still_400(client: TestClient, body: Any) -> None:
    for path in ("/v2/models/taxi/infer", "/v2/models/taxi/versions/run1/infer"):
        answer = client.post(path, json=body)
        assert answer.status_code == 400, (path, answer.text)
        assert set(answer.json()) == {"error"}
    header = client.post("/v2/models/taxi/infer", content=b"{}", headers={"Inference-Header-Content-Length": "x"})
    assert header.status_code == 400 and "Inference-Header-Content-Length" in header.json()["error"]
