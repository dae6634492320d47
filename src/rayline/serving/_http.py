"""The FastAPI app each serving replica exposes: /predict, /healthz, /docs, /openapi.json.

Built inside the replica (``__serve_build_asgi_app__``) after the model has loaded, so the
request schema in /docs has the trained model's real fields.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.exceptions import HTTPException

from rayline._version import __version__
from rayline.errors import RaylineError, first_line
from rayline.serving._auth import Access, ApiKeyGuard
from rayline.serving._explain import PATH as EXPLAIN_PATH
from rayline.serving._explain import ExplainResponse
from rayline.serving._routing import ROUTE_HEADER, ROUTE_KEY
from rayline.serving._statuses import ANSWERED, answer
from rayline.serving._stream import PATH as STREAM_PATH
from rayline.serving._stream import PredictChunk, add_stream_route

if TYPE_CHECKING:
    from rayline.serving.oip.service import OIPModel

log = logging.getLogger(__name__)
MODEL_HEADER = "serve_multiplexed_model_id"
ROUTE_HEADER_BYTES = ROUTE_HEADER.encode()
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# A validated body and the model header (or None) -> the run that answered, one result per input.
Answerer = Callable[[Any, str | None], Awaitable[tuple[str, list[dict[str, Any]]]]]


class FastJSON(JSONResponse):
    """Compact JSON without FastAPI's generic encoder walk (results are already JSON-ready).

    A JSONResponse, so the OpenAPI document declares its answers as JSON objects, not strings."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware (no per-request task): 413 for a body over ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    without one (chunked) is counted as it arrives and refused once it passes the limit, so
    no body ever costs more than ``limit`` bytes of memory."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    def _refusal(self, size: str) -> JSONResponse:
        return JSONResponse({"error": f"request body of {size} bytes is over the {self.limit}-byte limit"}, 413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A stream is read a line at a time; the limit bounds each line there (_stream).
        if scope["type"] != "http" or scope.get("path", "").endswith(STREAM_PATH):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refusal(str(int(value)))(scope, receive, send)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refusal(f"more than {self.limit}")(scope, receive, send)


class RouteKey:
    """Pure ASGI middleware: the ``X-Route-Key`` header, for the canary's sticky choice (``_routing``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope.get("headers", ()):
                if key == ROUTE_HEADER_BYTES:
                    ROUTE_KEY.set(value.decode("latin-1")[:256])
                    break
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


def _http_error(_: Request, exc: Exception) -> Response:
    """Starlette's own answers (404 for an unknown path, 405 with its ``Allow`` header for a wrong
    method) as ``{"error": ...}``, like every other error, instead of its ``{"detail": ...}``."""
    assert isinstance(exc, HTTPException)
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    return JSONResponse({"error": detail}, exc.status_code, headers=exc.headers)


def _jsonable(errors: list[Any]) -> list[dict[str, Any]]:
    """Each error's type, place and message. Not the input it quotes: that can be the whole body,
    or a number JSON cannot carry back (1e400 parses to infinity)."""
    return [
        {
            "type": str(e.get("type")),
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg")),
        }
        for e in errors
    ]


def _answered(err: RaylineError) -> JSONResponse:
    """A request's error (``_statuses``) as ``{"error": ...}`` with its status."""
    status, text = answer(err)
    return JSONResponse({"error": text}, status.http)


def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    """A bug still answers JSON (500), with the one line that says what broke; the replica logs the rest."""
    log.error("unexpected error answering a request", exc_info=exc)
    return JSONResponse({"error": f"internal error: {first_line(exc)}"}, 500)


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


class ErrorBody(BaseModel):
    """Every 4xx answer: one line naming what was wrong, and the validator's details where there are some."""

    error: str = Field(description="what was wrong, naming the field (e.g. 0.trip_distance) or the limit")
    detail: list[dict[str, Any]] | None = Field(
        default=None, description="each validation error, when there were several"
    )


class Health(BaseModel):
    """``/healthz``: the model this replica serves and its data kind's description of the inputs."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok"]
    spec: str
    family: str
    model_run_id: str
    topology: Literal["fused", "composed"]
    rayline_version: str
    replica: str
    batching: dict[str, int] = Field(description="per replica: batches formed, requests they held, the largest")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": ERROR_STATUS[code]} for code in codes
    }
    if 429 in errors:  # written by Ray's servers, made JSON by ``_overload``
        errors[429]["headers"] = {"Retry-After": RETRY_AFTER}
    return errors


ERROR_STATUS = {
    400: "the body is not JSON",
    401: "the API key is missing or wrong",
    404: "the requested model is not a run this service may answer with",
    413: "the body is over serve.max_request_bytes",
    422: "the JSON does not match the request schema, or a value cannot be used (the field is named)",
    429: "every replica is busy and its queue is full (serve.max_queued_requests): retry after Retry-After",
}
RETRY_AFTER = {"description": "seconds to wait before retrying (serve.retry_after_s)", "schema": {"type": "integer"}}
DOCS_ASSETS = "/docs-assets"


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI from assets the service serves itself: /docs renders without a network."""
    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="./openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f".{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f".{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f".{DOCS_ASSETS}/favicon.png",
        )


def build_api(
    *,
    title: str,
    body_model: type[Any],
    predict: Answerer,
    info: dict[str, Any],
    api_key: str | None,
    max_request_bytes: int,
    page: str | None = None,
    output_model: type[BaseModel] | None = None,
    docs_auth: bool = True,
    oip: OIPModel | None = None,
    stream: tuple[PredictChunk, int] | None = None,
    live: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None,
    explain: Answerer | None = None,
) -> Any:
    """The ingress app (with the Open Inference Protocol's ``/v2`` routes when ``oip`` is given).

    ``explain`` (optional) answers ``POST /explain`` as ``predict`` answers ``/predict`` (same
    body, same model header), and raises ``NotExplainable`` for a model without explanations (400).

    ``predict(body, model_id)`` takes a validated body and the ``serve_multiplexed_model_id``
    header (or None) and returns the model run that answered and one result per item. It raises
    DataError for content the schema cannot catch (422) and RegistryError for unknown models (404);
    ``_statuses`` has the status of each.
    ``output_model`` describes one prediction in the OpenAPI document.
    """
    app = FastAPI(
        title=title,
        version=str(info.get("rayline_version") or __version__),
        description=f"Predictions from {info.get('family')} model run {info.get('model_run_id')}.",
        default_response_class=FastJSON,
        docs_url=None,  # FastAPI's own pages load Swagger UI and ReDoc from a CDN
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    _offline_docs(app)

    if page is not None:

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def index() -> HTMLResponse:
            return HTMLResponse(page)

    # response_model=None: the documented models describe answers built by hand (no per-request validation).
    @app.get(
        "/healthz",
        summary="Health",
        operation_id="healthz",
        response_model=None,
        responses={200: {"model": Health, "description": "the replica is up, serving this model"}},
    )
    async def healthz() -> dict[str, Any]:
        extra = live() if live is not None else {}
        if inspect.isawaitable(extra):  # the composed ingress asks its model deployment
            extra = await extra
        return {"status": "ok", **info, **extra, "replica": _replica_id()}

    schema = body_model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    prediction: Any = output_model or dict[str, Any]
    answer = create_model(
        "PredictResponse",
        model=(str, Field(description="the run that answered")),
        predictions=(list[prediction], Field(description="one per input, in order")),
    )
    codes = (400, 401, 404, 413, 422, 429) if api_key is not None else (400, 404, 413, 422, 429)
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
    if api_key is not None:
        extra["security"] = [{"apiKey": []}]

    app.post(
        "/predict",
        summary="Predict",
        operation_id="predict",
        response_model=None,
        openapi_extra=extra,
        responses={200: {"model": answer, "description": "one prediction per input"}, **_errors(*codes)},
    )(_body_route(body_model, predict, "predictions"))

    if explain is not None:
        _add_explain_route(app, explain, body_model, extra, codes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(definitions)
            if api_key is not None:
                components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = document
        return app.openapi_schema

    if stream is not None:
        add_stream_route(
            app,
            stream[0],
            chunk=stream[1],
            max_line=max_request_bytes,
            model_header=MODEL_HEADER,
            errors=_errors(*codes),
        )
    if oip is not None:
        from rayline.serving.oip.rest import add_routes

        add_routes(app, oip, _errors(*codes))

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=max_request_bytes)
    app.add_middleware(RouteKey)
    if api_key is not None:  # outermost: a caller without the key learns nothing, not even the limit
        app.add_middleware(ApiKeyGuard, key=api_key, docs_auth=docs_auth)
    return app


def _add_explain_route(
    app: FastAPI,
    explain: Answerer,
    body_model: type[Any],
    extra: dict[str, Any],
    codes: tuple[int, ...],
) -> None:
    """``POST /explain`` (``_explain``): ``/predict``'s body and errors, plus 400 for a model that cannot explain."""
    errors = _errors(*codes)
    errors[400] = {"model": ErrorBody, "description": "the body is not JSON, or the model has no explanations"}

    app.post(
        EXPLAIN_PATH,
        summary="Explain",
        operation_id="explain",
        description="Why the model answered as it did, one explanation per input: per-feature contributions "
        "(TreeSHAP, adding up to the margin) for tree models of tables, a saliency map for image models.",
        response_model=None,
        openapi_extra=extra,
        responses={200: {"model": ExplainResponse, "description": "one explanation per input"}, **errors},
    )(_body_route(body_model, explain, "explanations"))


def _body_route(body_model: type[Any], call: Answerer, key: str) -> Callable[[Request], Awaitable[Any]]:
    """The handler of ``/predict`` and ``/explain``: the body validated, then ``call(body, model
    header)`` as ``{"model": <run>, key: <one result per input>}``, or the status of its error."""

    # No docstring: FastAPI would publish it as the operation's description.
    async def route(request: Request) -> Any:
        # pydantic parses and validates the raw bytes in one pass (faster than FastAPI's
        # json.loads + validate), and any content type is accepted: curl -d sends form-encoded.
        try:
            body = body_model.model_validate_json(await request.body())
        except ValidationError as err:
            return error_response(list(err.errors(include_url=False)))
        try:
            model, results = await call(body, request.headers.get(MODEL_HEADER))
        except ANSWERED as err:
            return _answered(err)
        return {"model": model, key: results}

    return route


def ingress_app(
    *,
    info: dict[str, Any],
    body_model: type[Any],
    predict: Answerer,
    access: Access,
    max_request_bytes: int,
    fields: list[dict[str, Any]] | None,
    output_model: type[BaseModel] | None = None,
    oip: OIPModel | None = None,
    stream_chunk: int | None = None,
    live: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None,
    explain: Answerer | None = None,
) -> Any:
    """``build_api`` as a serving replica calls it: title, the API key, the page at /.

    ``stream_chunk``: lines per ``/predict/stream`` chunk; each chunk is predicted as one
    ``/predict`` body (``body_model`` validates it, ValidationError naming a bad line)."""
    from rayline.serving._page import render

    async def predict_lines(inputs: list[Any], header_id: str | None) -> tuple[str, list[dict[str, Any]]]:
        return await predict(body_model.model_validate(inputs), header_id)

    stream = None if stream_chunk is None else (predict_lines, stream_chunk)
    title = f"rayline: {info['spec']}"
    return build_api(
        title=title,
        body_model=body_model,
        predict=predict,
        info=info,
        api_key=access.key(),
        docs_auth=access.docs_auth,
        max_request_bytes=max_request_bytes,
        output_model=output_model,
        oip=oip,
        stream=stream,
        live=live,
        explain=explain,
        page=render(
            title=title,
            model_run_id=str(info["model_run_id"]),
            fields=fields,
            scales_to_zero=bool(info.get("scales_to_zero")),
        ),
    )
