"""The ingress FastAPI app on its own (no Ray): auth, size limit, error mapping, the page at /."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rayline.errors import DataError, RegistryError
from rayline.serving._http import build_api


class Body(BaseModel):
    values: list[float]


async def predict(body: Body, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    if model_id == "unknown":
        raise RegistryError("no run with id 'unknown'")
    if any(v < 0 for v in body.values):
        raise DataError("values.0: must not be negative")
    return model_id or "run1", [{"double": 2 * v} for v in body.values]


def served(**options: Any) -> TestClient:
    """The app with the key s3cret and a 200-byte body limit; ``options`` go to build_api."""
    app = build_api(
        title="t",
        body_model=Body,
        predict=predict,
        info={"model_run_id": "run1"},
        api_key="s3cret",
        max_request_bytes=200,
        **options,
    )
    return TestClient(app)


@pytest.fixture
def client() -> TestClient:
    return served(page="<html>hello</html>")


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
    page = client.get("/", headers=AUTH)
    assert page.status_code == 200 and page.text == "<html>hello</html>" and "text/html" in page.headers["content-type"]
    assert "/" not in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_key_guards_docs_and_page_but_not_health(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    for path in ("/", "/docs", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.json()["error"].startswith("missing or wrong API key")
        assert refused.headers["www-authenticate"].startswith("Basic")  # a browser asks for it
    assert client.post("/predict", json={"values": [1]}).headers["www-authenticate"].startswith("Bearer")
    # a browser's Basic auth: any user name, the key as the password
    assert client.get("/docs", auth=("anyone", "s3cret")).status_code == 200
    assert client.get("/docs", auth=("anyone", "wrong")).status_code == 401
    # a key that is not ASCII is refused like any wrong one (compare_digest on text would raise)
    weird = client.post("/predict", json={"values": [1]}, headers={"Authorization": "Bearer s\u00e9cret".encode()})
    assert weird.status_code == 401


def test_docs_can_be_left_open() -> None:
    open_client = served(docs_auth=False)
    assert open_client.get("/docs").status_code == 200
    assert open_client.get("/openapi.json").status_code == 200
    assert open_client.post("/predict", json={"values": [1]}).status_code == 401
    # the model's other answers need the key too, whatever docs_auth says; the protocol's probes do not
    for path in ("/explain", "/v2/models/t/infer", "/v2/models/t"):
        assert open_client.post(path, json={}).status_code == 401, path
    for client in (open_client, served()):
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert client.get(path).status_code != 401, path


def test_docs_are_served_offline(client: TestClient) -> None:
    page = client.get("/docs", headers=AUTH).text
    assert "cdn" not in page.lower() and "https://" not in page.split("<body>")[1]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        got = client.get(f"/docs-assets/{asset}", headers=AUTH)
        assert got.status_code == 200 and len(got.content) > 10_000
        assert f"./docs-assets/{asset}" in page


def test_openapi_declares_every_answer(client: TestClient) -> None:
    doc = client.get("/openapi.json", headers=AUTH).json()
    predict_op = doc["paths"]["/predict"]["post"]
    assert set(predict_op["responses"]) == {"200", "400", "401", "404", "413", "422", "429"}
    for code in ("422", "429"):  # a full queue's 429 too: Ray writes it, rayline's middleware makes it JSON
        error = predict_op["responses"][code]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorBody"}
    assert predict_op["responses"]["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    answer = doc["components"]["schemas"]["PredictResponse"]
    assert set(answer["required"]) == {"model", "predictions"}
    health = doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert health == {"$ref": "#/components/schemas/Health"}
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert predict_op["security"] == [{"apiKey": []}]


def test_a_chunked_body_over_the_limit_is_413_before_it_is_all_read(client: TestClient) -> None:
    sent: list[int] = []

    def chunks() -> Any:
        for _ in range(50):  # 50 x 100 bytes, no Content-Length
            sent.append(100)
            yield b" " * 100

    big = client.post("/predict", content=chunks(), headers=AUTH)
    assert big.status_code == 413 and "limit" in big.json()["error"]


def test_a_bug_still_answers_json(client: TestClient) -> None:
    """A prediction JSON cannot carry (infinity) is a JSON 500, not a bare text page."""
    served = TestClient(client.app, raise_server_exceptions=False)  # as a real server answers
    broken = served.post("/predict", content=b'{"values": [1e400]}', headers=AUTH)
    assert broken.status_code == 500 and broken.json()["error"].startswith("internal error:")


def test_a_refused_value_is_not_echoed_back(client: TestClient) -> None:
    bad = client.post("/predict", content=b'{"values": ["' + b"x" * 150 + b'"]}', headers=AUTH)
    assert bad.status_code == 422 and "x" * 100 not in bad.text
    assert bad.json()["detail"][0]["loc"] == ["values", 0]


def test_unknown_paths_and_methods_answer_error_json(client: TestClient) -> None:
    """Starlette's own 404 and 405 carry ``{"error": ...}`` like every other error (not ``{"detail": ...}``)."""
    for path in ("/nope", "/predict/nope", "/docs-assets/nope.js"):
        missing = client.get(path, headers=AUTH)
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}, path
    wrong = client.get("/predict", headers=AUTH)
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}
    assert wrong.headers["allow"] == "POST"
    assert client.delete("/healthz").headers["allow"] == "GET"
    # the key is still asked first, with its own answer
    refused = client.get("/nope")
    assert refused.status_code == 401 and refused.json() == {
        "error": "missing or wrong API key (Authorization: Bearer KEY)"
    }
    assert refused.headers["www-authenticate"].startswith("Basic")
    # with the documentation open, an unknown path needs no key to be told it is unknown
    assert served(docs_auth=False).get("/nope").json() == {"error": "Not Found"}
    # nothing else changed: the document and the size limit
    doc = client.get("/openapi.json", headers=AUTH)
    assert doc.status_code == 200 and set(doc.json()["paths"]) >= {"/predict", "/healthz"}
    big = client.post("/predict", content=b"[" + b" " * 300 + b"]", headers=AUTH)
    assert big.status_code == 413 and set(big.json()) == {"error"}
