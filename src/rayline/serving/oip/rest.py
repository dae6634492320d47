"""The Open Inference Protocol's REST endpoints (``/v2/...``) on a service's FastAPI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from rayline.data.tensors import NUMPY
from rayline.errors import DataError, RaylineError
from rayline.serving._statuses import ANSWERED, answer
from rayline.serving.oip.codec import encode_rest, parse_rest
from rayline.serving.oip.service import SERVER, OIPModel

HEADER_LENGTH = "Inference-Header-Content-Length"
TAG: list[str | Enum] = ["Open Inference Protocol"]


_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(NUMPY)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "the values, flat or nested, row-major"},
        "parameters": {"type": "object", "description": "binary_data_size: the tensor follows the JSON"},
    },
}
# The protocol's JSON body; which names, datatypes and shapes fit is the model's metadata.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                        "parameters": {"type": "object"},
                    },
                }
            }
        },
    }
}


def _error(err: RaylineError) -> JSONResponse:
    status, text = answer(err)
    return JSONResponse({"error": text}, status.oip_rest)


def add_routes(app: FastAPI, oip: OIPModel, errors: dict[int | str, dict[str, Any]]) -> None:
    """``errors``: the error answers to document on every route (the protocol's ``{"error": ...}``)."""
    failing: dict[int | str, dict[str, Any]] = {c: errors[c] for c in errors if c in (400, 401, 404, 413, 429)}

    @app.get("/v2", tags=TAG, summary="Server metadata", responses=failing)
    async def server_metadata() -> dict[str, Any]:
        return SERVER

    @app.get("/v2/health/live", tags=TAG, summary="Server live", responses=failing)
    async def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=TAG, summary="Server ready", responses=failing)
    async def ready() -> dict[str, Any]:
        return {"ready": True}

    async def metadata(request: Request, name: str, version: str | None) -> Any:
        try:
            return await oip.metadata(name, version)
        except ANSWERED as err:
            return _error(err)

    async def model_ready(request: Request, name: str, version: str | None) -> Any:
        try:
            return {"name": name, "ready": await oip.ready(name, version)}
        except ANSWERED as err:
            return _error(err)

    async def infer(request: Request, name: str, version: str | None) -> Any:
        raw = request.headers.get(HEADER_LENGTH)
        try:
            # The model first: an unknown model or version is 404 whatever the body holds.
            run_id = await oip.version(name, version)
            if raw is not None and not raw.isdigit():
                raise DataError(f"{HEADER_LENGTH} must be a number of bytes, got {raw[:40]!r}")
            inference = parse_rest(await request.body(), int(raw) if raw is not None else None)
            outputs = await oip.infer_run(run_id, inference)
        except ANSWERED as err:
            return _error(err)
        body, head = encode_rest(oip.name, run_id, inference, outputs)
        if head is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(head)})

    # Each model route stands twice: for the model's default version and for a version named.
    for tail, method, answer_fn, summaries, extra in (
        ("", "GET", metadata, ("Model metadata", "Model version metadata"), None),
        ("/ready", "GET", model_ready, ("Model ready", "Model version ready"), None),
        ("/infer", "POST", infer, ("Infer", "Infer with a version"), INFER_BODY),
    ):
        add = partial(app.add_api_route, methods=[method], tags=TAG, responses=failing, openapi_extra=extra)
        default, versioned = _both_versions(answer_fn)
        add(f"/v2/models/{{name}}{tail}", default, summary=summaries[0], operation_id=answer_fn.__name__)
        add(
            f"/v2/models/{{name}}/versions/{{version}}{tail}",
            versioned,
            summary=summaries[1],
            operation_id=f"{answer_fn.__name__}_version",
        )


Answer = Callable[[Request, str, str | None], Awaitable[Any]]


def _both_versions(answer_fn: Answer) -> tuple[Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]]:
    """FastAPI endpoints for a route without and with ``/versions/{version}`` (FastAPI reads
    path parameters from the signature, so each needs its own)."""

    async def default(request: Request, name: str) -> Any:
        return await answer_fn(request, name, None)

    async def versioned(request: Request, name: str, version: str) -> Any:
        return await answer_fn(request, name, version)

    return default, versioned
