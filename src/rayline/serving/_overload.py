"""A full queue's 429 as rayline's JSON error, written by Ray's own HTTP servers.

Ray Serve refuses a request that finds every queue full before any rayline code runs: its proxy
(``serve.ingress: proxy``, and HAProxy's fallback) and each replica's own HTTP server (direct
ingress, the servers HAProxy balances over) answer ``Request dropped due to backpressure`` as
text/plain. Both servers wrap their ASGI app in the Starlette middlewares returned by the function
that ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names (read when a Ray process starts);
``middlewares`` is that function for rayline's services. ``OverloadAsJSON`` rewrites only that
answer into ``{"error": ...}``, the shape of every other 4xx of rayline's routes and of the Open
Inference Protocol's REST errors, keeping ``Retry-After``; any other response passes untouched.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# ``_statuses.OVERLOADED.http`` (a test keeps them equal). Not imported: this module loads in every
# Ray proxy and replica as it starts, and ``_statuses`` would bring the data kinds along.
STATUS = 429
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "rayline.serving._overload:middlewares"


def overloaded_body(retry_after: str | None) -> bytes:
    """The JSON error of a request refused because every queue is full."""
    when = f"retry after {retry_after} s" if retry_after else "retry later"
    message = f"the service is at capacity: every replica is busy and its queue is full; {when}"
    return json.dumps({"error": message}).encode()


class OverloadAsJSON:
    """Pure ASGI (no per-request task): only a 429 that is not JSON already is rewritten."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_json(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == STATUS:
                headers = {name.lower(): value for name, value in message.get("headers", [])}
                if not headers.get(b"content-type", b"").startswith(b"application/json"):
                    replaced = True
                    after = headers.get(b"retry-after")
                    body = overloaded_body(after.decode("latin-1") if after else None)
                    kept = [
                        (name, value)
                        for name, value in message.get("headers", [])
                        if name.lower() not in (b"content-type", b"content-length")
                    ]
                    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    await send({**message, "headers": kept})
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
            if replaced:  # Ray's text body: already answered with the JSON one
                return
            await send(message)

        await self.app(scope, receive, send_json)


def middlewares() -> list[Any]:
    """Ray's HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): Starlette
    middlewares around the proxy's and each replica's HTTP server."""
    from starlette.middleware import Middleware

    return [Middleware(OverloadAsJSON)]
