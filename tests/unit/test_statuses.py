"""One table (``serving._statuses``) answers a request's error on every transport: rayline's JSON
routes, the stream, the Open Inference Protocol over REST and over gRPC (apps on their own, no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rayline.data import get_kind
from rayline.errors import DataError, RaylineError, RegistryError, StoreError, TrainError
from rayline.serving._auth import Access
from rayline.serving._explain import NotExplainable
from rayline.serving._http import build_api
from rayline.serving._statuses import OVERLOADED, status_of
from rayline.serving.config import overload_options
from rayline.serving.oip.service import GRPCInference, OIPModel
from rayline.spec import ServeSpec

DOWN = "could not read run abc (registry at http://mlflow:5000): the database is down"

# model id -> the error a replica raises for it (None: it answers)
ERRORS: dict[str, RaylineError] = {
    "bad": DataError("values.0: must not be negative"),
    "unknown": RegistryError("model 'unknown': no run with id 'unknown'", hint="see `rayline runs list`"),
    "down": StoreError(DOWN, hint="check MLFLOW_TRACKING_URI"),
    "plain": NotExplainable("model run plain (tiny) has no explanations"),
}


def _raise_for(model_id: str | None) -> str:
    if model_id in ERRORS:
        raise ERRORS[model_id]
    return model_id or "run1"


class Body(BaseModel):
    values: list[float]


async def predict(body: Body, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    return _raise_for(model_id), [{"double": 2 * v} for v in body.values]


async def predict_chunk(inputs: list[Any], model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    return _raise_for(model_id), [{"double": 2 * item["x"]} for item in inputs]


class FakeServed:
    kind = get_kind("table")

    async def resolve(self, model_id: str | None) -> str:
        return _raise_for(model_id)

    async def meta_of(self, run_id: str) -> dict[str, Any]:
        return {"family": "tiny", "data_kind": "table", "layout": {"features": ["x"], "label": "y", "task": "binary"}}


async def predict_items(items: list[Any], run_id: str) -> list[dict[str, Any]]:
    return [{"label": True} for _ in items]


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = build_api(
        title="t",
        body_model=Body,
        predict=predict,
        info={"model_run_id": "run1"},
        api_key=None,
        max_request_bytes=10_000,
        stream=(predict_chunk, 2),
        explain=lambda body, model_id: predict(body, model_id),
        oip=OIPModel("taxi", FakeServed(), predict_items),  # type: ignore[arg-type]
    )
    return TestClient(app)


@pytest.mark.parametrize(
    ("model", "status", "error"),
    [
        ("bad", 422, "values.0: must not be negative"),
        ("unknown", 404, "model 'unknown': no run with id 'unknown' (see `rayline runs list`)"),
        ("down", 503, f"{DOWN} (check MLFLOW_TRACKING_URI)"),  # a store that failed is no unknown model
        ("plain", 400, "model run plain (tiny) has no explanations"),
    ],
)
def test_json_routes_and_the_stream(client: TestClient, model: str, status: int, error: str) -> None:
    header = {"serve_multiplexed_model_id": model}
    for path in ("/predict", "/explain"):
        answer = client.post(path, json={"values": [1]}, headers=header)
        assert (answer.status_code, answer.json()) == (status, {"error": error}), path
    streamed = client.post("/predict/stream", content=b'{"x": 1}\n{"x": 2}\n', headers=header)
    expected = f"lines 1-2: {error}" if model == "bad" else error  # a bad value names its lines
    assert (streamed.status_code, streamed.json()) == (status, {"error": expected})


@pytest.mark.parametrize(("model", "status"), [("unknown", 404), ("down", 503), ("run1", 400)])
def test_the_protocol_over_rest(client: TestClient, model: str, status: int) -> None:
    """A bad body is 400 here (the protocol's), 422 on /predict."""
    answer = client.post(f"/v2/models/taxi/versions/{model}/infer", json={"inputs": []})
    assert answer.status_code == status
    assert answer.json()["error"] == {"unknown": str(ERRORS["unknown"]), "down": str(ERRORS["down"])}.get(
        model, "the request needs a non-empty 'inputs' list"
    )


class Context:
    def __init__(self) -> None:
        self.code: Any = None
        self.details = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class Edge(GRPCInference):
    def __init__(self) -> None:
        self.access = Access()

    async def call(self, error: Exception, context: Context) -> Any:
        async def work() -> str:
            raise error

        return await self._answer(context, "empty", work)


@pytest.mark.parametrize(
    ("model", "code", "details"),
    [
        ("bad", grpc.StatusCode.INVALID_ARGUMENT, "values.0: must not be negative"),
        ("unknown", grpc.StatusCode.NOT_FOUND, str(ERRORS["unknown"])),
        ("down", grpc.StatusCode.UNAVAILABLE, str(ERRORS["down"])),
    ],
)
def test_grpc(model: str, code: grpc.StatusCode, details: str) -> None:
    context = Context()
    assert asyncio.run(Edge().call(ERRORS[model], context)) == "empty"
    assert (context.code, context.details) == (code, details)


def test_other_errors_are_the_services_own_failure() -> None:
    """Not a request's error: each transport's catch-all answers 500 (gRPC: INTERNAL)."""
    assert status_of(TrainError("x")) is None and status_of(ValueError("x")) is None
    context = Context()
    with pytest.raises(TrainError):
        asyncio.run(Edge().call(TrainError("x"), context))
    assert context.code is None


def test_a_full_queue_is_the_tables_overloaded_status(client: TestClient) -> None:
    """Ray Serve answers it, with the status the table gives (``config.overload_options``); the
    OpenAPI document declares it, JSON with Retry-After, on every route that predicts."""
    options = overload_options(ServeSpec(retry_after_s=2))
    assert options["backpressure_config"] == {"status_code": 429, "retry_after_s": 2}
    assert (OVERLOADED.http, OVERLOADED.oip_rest, OVERLOADED.grpc) == (429, 429, "RESOURCE_EXHAUSTED")
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/explain", "/predict/stream", "/v2/models/{name}/infer"):
        declared = paths[path]["post"]["responses"][str(OVERLOADED.http)]
        assert declared["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, path
        assert declared["headers"]["Retry-After"]["schema"] == {"type": "integer"}, path
