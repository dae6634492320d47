"""``POST /explain`` on the ingress app on its own (no Ray): the body and errors of ``/predict``,
400 for a model without explanations, the answer documented; and ``explain_checked``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rayline.errors import DataError, RegistryError
from rayline.serving._explain import NotExplainable, can_explain, explain_checked
from rayline.serving._http import build_api


class Body(BaseModel):
    values: list[float]


async def predict(body: Body, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    return model_id or "run1", [{"double": 2 * v} for v in body.values]


async def explain(body: Body, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Stands in for a replica: run2 cannot explain, unknown is no run, a negative value is refused."""
    if model_id == "unknown":
        raise RegistryError("no run with id 'unknown'")
    if model_id == "run2":
        raise NotExplainable("model run run2 (tiny) has no explanations")
    if any(v < 0 for v in body.values):
        raise DataError("values.0: must not be negative")
    return model_id or "run1", [
        {"contributions": {"value": v}, "bias": 0.5, "margin": v + 0.5, "label": v > 0} for v in body.values
    ]


def client(**options: Any) -> TestClient:
    """The app with a 300-byte body limit; ``options`` go to build_api (``explain``: the route)."""
    info = {"model_run_id": "run1"}
    app = build_api(
        title="t", body_model=Body, predict=predict, info=info, api_key=None, max_request_bytes=300, **options
    )
    return TestClient(app)


def test_explain_answers_one_explanation_per_input() -> None:
    answer = client(explain=explain).post("/explain", json={"values": [1, 2]})
    assert answer.status_code == 200
    assert answer.json() == {
        "model": "run1",
        "explanations": [
            {"contributions": {"value": 1.0}, "bias": 0.5, "margin": 1.5, "label": True},
            {"contributions": {"value": 2.0}, "bias": 0.5, "margin": 2.5, "label": True},
        ],
    }
    named = client(explain=explain).post("/explain", json={"values": [1]}, headers={"serve_multiplexed_model_id": "r3"})
    assert named.json()["model"] == "r3"


@pytest.mark.parametrize(
    ("body", "header", "status", "needle"),
    [
        (b"{no", None, 400, "not valid JSON"),
        (b'{"values": ["x"]}', None, 422, "values.0:"),
        (b'{"values": [-1]}', None, 422, "must not be negative"),
        (b'{"values": [1]}', "unknown", 404, "unknown"),
        (b'{"values": [1]}', "run2", 400, "has no explanations"),
        (b"[" + b" " * 400 + b"]", None, 413, "limit"),
    ],
)
def test_errors_are_4xx_json(body: bytes, header: str | None, status: int, needle: str) -> None:
    headers = {"serve_multiplexed_model_id": header} if header else {}
    answer = client(explain=explain).post("/explain", content=body, headers=headers)
    assert answer.status_code == status
    assert needle in answer.json()["error"]


def test_documented_like_predict_and_absent_without_a_hook() -> None:
    doc = client(explain=explain).get("/openapi.json").json()
    operation = doc["paths"]["/explain"]["post"]
    assert operation["requestBody"] == doc["paths"]["/predict"]["post"]["requestBody"]
    assert {"200", "400", "404", "413", "422"} <= set(operation["responses"])
    assert "explanations" in doc["components"]["schemas"]["ExplainResponse"]["properties"]
    assert "/explain" not in client().get("/openapi.json").json()["paths"]
    assert client().post("/explain", json={"values": [1]}).status_code in (404, 405)


class Explains:
    def explain(self, batch: Any) -> Any:
        return batch

    def explain_items(self, items: list[Any]) -> list[dict[str, Any]]:
        return [{"contributions": {}, "bias": 0.0, "margin": float(i)} for i in items]


class Short(Explains):
    def explain_items(self, items: list[Any]) -> list[dict[str, Any]]:
        return []


class PredictsOnly:
    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        return [{} for _ in items]


def test_explain_checked_picks_the_hook_and_counts() -> None:
    assert can_explain(Explains()) and not can_explain(PredictsOnly())
    assert [e["margin"] for e in explain_checked(Explains(), [1, 2], run_id="r", family="f")] == [1.0, 2.0]
    with pytest.raises(NotExplainable, match=r"model run r \(tiny\) has no explanations"):
        explain_checked(PredictsOnly(), [1], run_id="r", family="tiny")
    with pytest.raises(RuntimeError, match="0 explanations for 2 inputs"):
        explain_checked(Short(), [1, 2], run_id="r", family="f")
