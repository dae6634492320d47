"""How /predict/stream cuts a body into numbered lines and chunks, and what its route documents
and answers, without a service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rayline.serving._http import build_api
from rayline.serving._stream import LineError, _chunks, _lines


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def chunked(data: bytes, *, piece: int = 3, chunk: int = 2, max_line: int = 100) -> list[tuple[list[int], list[Any]]]:
    async def collect() -> list[tuple[list[int], list[Any]]]:
        return [c async for c in _chunks(_lines(_pieces(data, piece), max_line), chunk)]

    return asyncio.run(collect())


def test_lines_keep_their_numbers_across_pieces_and_blank_lines() -> None:
    data = b'{"a": 1}\n\n{"a": 2}\n   \n{"a": 3}\n{"a": 4}'  # no newline at the end
    assert chunked(data) == [([1, 3], [{"a": 1}, {"a": 2}]), ([5, 6], [{"a": 3}, {"a": 4}])]


def test_a_bad_line_is_named_by_its_number() -> None:
    with pytest.raises(LineError, match="line 3: not valid JSON") as caught:
        chunked(b'{"a": 1}\n\n{"a": \n{"a": 2}\n')
    assert caught.value.status == 400


def test_a_line_over_the_limit_is_refused_before_it_ends() -> None:
    with pytest.raises(LineError, match="line 2 is over the 20-byte limit") as caught:
        chunked(b'{"a": 1}\n{"a": "' + b"x" * 50 + b'"}\n', max_line=20)
    assert caught.value.status == 413


# ------------------------------------------------------------ the route: its schema and its answers
class Body(BaseModel):
    values: list[float]


async def _predict(body: Body, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    return "run1", [{"double": 2 * v} for v in body.values]


async def _double(inputs: list[Any], model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    return "run1", [{"double": 2 * item["x"]} for item in inputs]


def _served() -> TestClient:
    app = build_api(
        title="t",
        body_model=Body,
        predict=_predict,
        info={},
        api_key=None,
        max_request_bytes=200,
        stream=(_double, 2),
    )
    return TestClient(app)


@pytest.mark.parametrize("body", [b"", b"\n", b" \n\t\n\r\n"])
def test_a_body_without_an_input_is_refused_by_the_schema_and_the_service(body: bytes) -> None:
    """What the OpenAPI document allows, the service takes: an empty stream is refused by both
    (schemathesis found the document allowing an empty body the service refused)."""
    client = _served()
    request_body = client.get("/openapi.json").json()["paths"]["/predict/stream"]["post"]["requestBody"]
    assert request_body["required"] is True
    for content_type in ("application/x-ndjson", "text/plain"):
        schema = request_body["content"][content_type]["schema"]
        assert not jsonschema.Draft202012Validator(schema).is_valid(body.decode())
        answer = client.post("/predict/stream", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 400 and answer.json() == {"error": "the body has no lines"}


def test_a_body_with_an_input_is_allowed_by_the_schema_and_predicted() -> None:
    client = _served()
    schema = client.get("/openapi.json").json()["paths"]["/predict/stream"]["post"]["requestBody"]
    body = '\n{"x": 1}\n\n{"x": 2}\n{"x": 3}'
    assert jsonschema.Draft202012Validator(schema["content"]["text/plain"]["schema"]).is_valid(body)
    answer = client.post("/predict/stream", content=body.encode(), headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 200 and answer.headers["rayline-model"] == "run1"
    assert [json.loads(line) for line in answer.text.splitlines()] == [{"double": 2}, {"double": 4}, {"double": 6}]
