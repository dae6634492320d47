"""A full queue's 429, as Ray's proxy and replica servers write it, becomes rayline's JSON error
(``serving._overload``, the middleware those servers load); every other answer passes untouched."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from ray.serve._private.http_util import convert_object_to_asgi_messages, retry_after_headers

from rayline.serving._haproxy import ingress_env
from rayline.serving._overload import CALLBACK, CALLBACK_ENV, STATUS, OverloadAsJSON, middlewares
from rayline.serving._statuses import OVERLOADED


def _app(obj: Any, status: int, retry_after_s: float | None = None) -> TestClient:
    """An ASGI app answering as Ray's servers do (``convert_object_to_asgi_messages``), wrapped."""

    async def ray(scope: Any, receive: Any, send: Any) -> None:
        for message in convert_object_to_asgi_messages(obj, status, retry_after_headers(retry_after_s)):
            await send(message)

    return TestClient(OverloadAsJSON(ray))


def test_rays_refusal_becomes_json_with_its_retry_after() -> None:
    answer = _app("Request dropped due to backpressure", 429, retry_after_s=2.5).post("/predict", json=[{}])
    assert answer.status_code == 429
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["retry-after"] == "3"  # Ray's, rounded up, kept
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert answer.json() == {
        "error": "the service is at capacity: every replica is busy and its queue is full; retry after 3 s"
    }


@pytest.mark.parametrize(
    ("obj", "status"),
    [("Request timed out", 408), ("Service Unavailable", 503), ({"error": "busy"}, 429), ({"a": 1}, 200)],
)
def test_other_answers_pass_untouched(obj: Any, status: int) -> None:
    answer = _app(obj, status).get("/")
    assert answer.status_code == status
    assert answer.content == convert_object_to_asgi_messages(obj, status)[1]["body"]


def test_the_middleware_is_rays_proxy_callback_on_every_ingress(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    assert OVERLOADED.http == STATUS
    assert [m.cls for m in middlewares()] == [OverloadAsJSON]
    monkeypatch.delenv(CALLBACK_ENV, raising=False)
    for mode in ("haproxy", "proxy", "direct"):
        env = ingress_env(mode, "127.0.0.1", 8000)  # type: ignore[arg-type]
        assert env[CALLBACK_ENV] == CALLBACK, mode
        if "RAY_SERVE_HAPROXY_SOCKET_PATH" in env:
            shutil.rmtree(env["RAY_SERVE_HAPROXY_SOCKET_PATH"].rsplit("/", 1)[0], ignore_errors=True)
    monkeypatch.setenv(CALLBACK_ENV, "theirs.module:callback")  # a callback of the user's own wins
    assert ingress_env("proxy", "127.0.0.1", 8000)[CALLBACK_ENV] == "theirs.module:callback"
