"""The ingress FastAPI app on its own (no Ray): auth, size limit, error mapping, the page at /."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rayline.errors import DataError, RegistryError
from rayline.serving._app import build_api


class Body(BaseModel):
    values: list[float]


async def predict(body: Body, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    if model_id == "unknown":
        raise RegistryError("no run with id 'unknown'")
    if any(v < 0 for v in body.values):
        raise DataError("values.0: must not be negative")
    return model_id or "run1", [{"double": 2 * v} for v in body.values]


@pytest.fixture
def client() -> TestClient:
    app = build_api(
        title="t",
        body_model=Body,
        predict=predict,
        info={"model_run_id": "run1"},
        api_key="s3cret",
        max_request_bytes=200,
        page="<html>hello</html>",
    )
    return TestClient(app)


AUTH = {"Authorization": "Bearer s3cret"}


def test_bearer_token_is_required(client: TestClient) -> None:
    assert client.post("/predict", json={"values": [1]}).status_code == 401
    assert client.post("/predict", json={"values": [1]}, headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.post("/predict", json={"values": [1, 2]}, headers=AUTH)
    assert ok.status_code == 200 and ok.json() == {"model": "run1", "predictions": [{"double": 2}, {"double": 4}]}


def test_errors_map_to_4xx_json(client: TestClient) -> None:
    assert client.post("/predict", content=b"{no", headers=AUTH).status_code == 400
    bad = client.post("/predict", json={"values": ["x"]}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["error"].startswith("values.0:")
    negative = client.post("/predict", json={"values": [-1]}, headers=AUTH)
    assert negative.status_code == 422 and negative.json() == {"error": "values.0: must not be negative"}
    unknown = client.post("/predict", json={"values": [1]}, headers={**AUTH, "serve_multiplexed_model_id": "unknown"})
    assert unknown.status_code == 404 and "unknown" in unknown.json()["error"]
    big = client.post("/predict", content=b"[" + b" " * 300 + b"]", headers=AUTH)
    assert big.status_code == 413 and "limit" in big.json()["error"]


def test_header_picks_the_model_and_page_is_served(client: TestClient) -> None:
    other = client.post("/predict", json={"values": [1]}, headers={**AUTH, "serve_multiplexed_model_id": "run2"})
    assert other.json()["model"] == "run2"
    page = client.get("/")
    assert page.status_code == 200 and page.text == "<html>hello</html>" and "text/html" in page.headers["content-type"]
    assert "/" not in client.get("/openapi.json").json()["paths"]
