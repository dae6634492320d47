"""The FastAPI app each serving replica exposes: /predict, /healthz, /docs, /openapi.json.

Built inside the replica (``__serve_build_asgi_app__``) after the model has loaded, so the
request schema in /docs has the trained model's real fields.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from rayline._version import __version__
from rayline.errors import DataError, RegistryError

MODEL_HEADER = "serve_multiplexed_model_id"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class FastJSON(Response):
    """Compact JSON without FastAPI's generic encoder walk (results are already JSON-ready)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


class BodyLimit:
    """Pure ASGI middleware: 413 before reading a body over ``limit`` bytes (no per-request task)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope.get("headers", ()):
                if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                    response = JSONResponse(
                        {"error": f"request body of {int(value)} bytes is over the {self.limit}-byte limit"},
                        status_code=413,
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def error_response(errors: list[Any]) -> JSONResponse:
    """400 for a body that is not JSON, 422 naming the first bad field otherwise."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"error": "request body is not valid JSON", "detail": _jsonable(errors)}, 400)
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    message = f"{where}: {first.get('msg', 'invalid')}"
    return JSONResponse({"error": message, "detail": _jsonable(errors)}, 422)


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(list(exc.errors()))


def _jsonable(errors: Any) -> Any:
    return json.loads(json.dumps(errors, default=str))


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a Serve replica (plain uvicorn in tests and benchmarks)
        return "local"


def count_batch(stats: dict[str, int], size: int) -> None:
    """Add one ``@serve.batch`` call of ``size`` requests to the ``batching`` counts in /healthz."""
    stats["batches"] += 1
    stats["requests"] += size
    stats["largest"] = max(stats["largest"], size)


def build_api(
    *,
    title: str,
    body_model: type[Any],
    predict: Callable[[Any, str | None], Awaitable[tuple[str, list[dict[str, Any]]]]],
    info: dict[str, Any],
    api_key: str | None,
    max_request_bytes: int,
    page: str | None = None,
) -> Any:
    """The ingress app.

    ``predict(body, model_id)`` takes a validated body and the ``serve_multiplexed_model_id``
    header (or None) and returns the model run that answered and one result per item. It raises
    DataError for content the schema cannot catch (422) and RegistryError for unknown models (404).
    """
    app = FastAPI(
        title=title,
        version=str(info.get("rayline_version") or __version__),
        description=f"Predictions from {info.get('family')} model run {info.get('model_run_id')}.",
        default_response_class=FastJSON,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)

    if page is not None:

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def index() -> HTMLResponse:
            return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", **info, "replica": _replica_id()}

    schema = body_model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})

    @app.post(
        "/predict",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
    )
    async def predict_route(request: Request) -> Any:
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given, f"Bearer {api_key}"):
                return JSONResponse({"error": "missing or wrong bearer token"}, 401)
        # pydantic parses and validates the raw bytes in one pass (faster than FastAPI's
        # json.loads + validate), and any content type is accepted: curl -d sends form-encoded.
        try:
            body = body_model.model_validate_json(await request.body())
        except ValidationError as err:
            return error_response(list(err.errors(include_url=False)))
        try:
            model, results = await predict(body, request.headers.get(MODEL_HEADER))
        except DataError as err:
            return JSONResponse({"error": err.message}, 422)
        except RegistryError as err:
            return JSONResponse({"error": str(err)}, 404)
        return {"model": model, "predictions": results}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(definitions)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=max_request_bytes)
    return app


def ingress_app(
    *,
    info: dict[str, Any],
    body_model: type[Any],
    predict: Callable[[Any, str | None], Awaitable[tuple[str, list[dict[str, Any]]]]],
    api_key_env: str | None,
    max_request_bytes: int,
    fields: list[dict[str, Any]] | None,
) -> Any:
    """``build_api`` as a serving replica calls it: title, bearer token from the env, the page at /."""
    import os

    from rayline.serving._page import render

    title = f"rayline: {info['spec']}"
    return build_api(
        title=title,
        body_model=body_model,
        predict=predict,
        info=info,
        api_key=os.environ.get(api_key_env) if api_key_env else None,
        max_request_bytes=max_request_bytes,
        page=render(title=title, model_run_id=str(info["model_run_id"]), fields=fields),
    )
