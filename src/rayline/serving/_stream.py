"""``POST /predict/stream``: NDJSON in, NDJSON predictions out as they are computed.

For inputs too big for one request body: one input per line (a table record, or an image as
``/predict`` takes it), read as it arrives and predicted a chunk of lines at a time (the family's batch size), each
prediction written as soon as its chunk is done. The service holds one chunk at a time, not the
body; so ``serve.max_request_bytes`` bounds a line here, not the whole stream.

A bad line found before the first prediction is written gets the same 4xx as ``/predict``; after
that the status is sent, so the stream ends with one ``{"error": ...}`` line naming the line.
A body with no input (empty, or blank lines only) is refused with 400, as ``/predict`` refuses an
empty list; the OpenAPI document says so (``BODY``: a text with a character that is not blank).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from rayline.errors import DataError
from rayline.serving._statuses import ANSWERED, answer

PATH = "/predict/stream"
PredictChunk = Callable[[list[Any], str | None], Awaitable[tuple[str, list[dict[str, Any]]]]]
# The body as JSON Schema can say it: text with at least one line that is not blank (what makes
# each line an input, NDJSON, it cannot say).
BODY = {"type": "string", "pattern": r"\S", "description": "NDJSON: one input per line; at least one"}


class _Streamed(StreamingResponse):
    """Writes while the request body is still being read. Starlette's own response would also
    listen for a disconnect (on servers before ASGI 2.4), taking and dropping the body's next
    chunks from under the reader."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.stream_response(send)
        except OSError:
            raise ClientDisconnect() from None


class LineError(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message, self.status = message, status


async def _lines(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line) of a body read as it arrives; blank lines skipped, none over ``max_line``."""
    pending = b""
    number = 0
    async for data in chunks:
        pending += data
        *complete, pending = pending.split(b"\n")
        for line in complete:
            number += 1
            if line.strip():
                yield number, line
        if len(pending) > max_line:
            raise LineError(f"line {number + 1} is over the {max_line}-byte limit (serve.max_request_bytes)", 413)
    if pending.strip():
        yield number + 1, pending


async def _chunks(lines: AsyncIterator[tuple[int, bytes]], size: int) -> AsyncIterator[tuple[list[int], list[Any]]]:
    """(line numbers, parsed lines), ``size`` lines at a time."""
    numbers: list[int] = []
    batch: list[Any] = []
    async for number, line in lines:
        try:
            batch.append(json.loads(line))
        except ValueError:
            raise LineError(f"line {number}: not valid JSON", 400) from None
        numbers.append(number)
        if len(batch) == size:
            yield numbers, batch
            numbers, batch = [], []
    if batch:
        yield numbers, batch


def add_stream_route(
    app: FastAPI,
    predict_chunk: PredictChunk,
    *,
    chunk: int,
    max_line: int,
    model_header: str,
    errors: dict[int | str, dict[str, Any]],
) -> None:
    """``predict_chunk(inputs, model_id)``: ``/predict``'s answer for those inputs (``chunk`` at most)."""

    async def predicted(
        numbers: list[int], inputs: list[Any], model_id: str | None
    ) -> tuple[str, list[dict[str, Any]]]:
        try:
            return await predict_chunk(inputs, model_id)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            loc = [str(p) for p in first.get("loc", ())]
            at = next((int(p) for p in loc if p.isdigit()), 0)
            where = ".".join(p for p in loc if not p.isdigit() and p != "image")
            line = numbers[at] if at < len(numbers) else numbers[0]
            # Lines are validated as Python objects, whose message names pydantic's class ("a valid
            # dictionary or instance of Record"); /predict's JSON says what the client can act on.
            msg = "Input should be an object" if first.get("type") == "model_type" else first.get("msg", "invalid")
            raise LineError(f"line {line}: {where + ': ' if where else ''}{msg}") from None
        except ANSWERED as err:
            status, text = answer(err)
            # A bad value names the lines of its chunk; an unknown model is the whole stream's.
            where = f"lines {numbers[0]}-{numbers[-1]}: " if isinstance(err, DataError) else ""
            raise LineError(f"{where}{text}", status.http) from None

    @app.post(
        PATH,
        summary="Predict a stream",
        operation_id="predict_stream",
        description="NDJSON: one input per line (a record, or an image); one prediction per line back, in order. "
        "A body without an input (empty, or only blank lines) is refused with 400.",
        response_model=None,
        responses={200: {"content": {"application/x-ndjson": {}}, "description": "one prediction per line"}, **errors},
        # Any content type is read the same way; text/plain says so to clients that know no NDJSON.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/x-ndjson": {"schema": BODY}, "text/plain": {"schema": BODY}},
            }
        },
    )
    async def predict_stream(request: Request) -> Any:
        model_id = request.headers.get(model_header)
        chunks = _chunks(_lines(request.stream(), max_line), chunk)
        try:  # the first chunk before the status: its errors are a 4xx like /predict's
            try:
                numbers, inputs = await chunks.__anext__()
            except StopAsyncIteration:
                raise LineError("the body has no lines", 400) from None
            run_id, first = await predicted(numbers, inputs, model_id)
        except LineError as err:
            return JSONResponse({"error": err.message}, err.status)

        async def body() -> AsyncIterator[bytes]:
            yield _ndjson(first)
            try:
                async for numbers, inputs in chunks:
                    yield _ndjson((await predicted(numbers, inputs, model_id))[1])
            except LineError as err:
                yield json.dumps({"error": err.message}).encode() + b"\n"

        return _Streamed(body(), media_type="application/x-ndjson", headers={"rayline-model": run_id})


def _ndjson(results: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":"), allow_nan=False).encode() + b"\n" for r in results)
