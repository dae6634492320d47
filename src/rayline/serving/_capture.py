"""``serve.capture`` in a replica: which requests are captured, under which id, by which writer.

The router (``_routing``) sees every answered request and its role on every transport
(``/predict``, ``/predict/stream``, the Open Inference Protocol over REST and gRPC) and the
shadow's answers; it hands each sampled one to ``Capture.record``. The id is Ray Serve's
request id (the ``X-Request-Id`` a caller sent, else the one Serve made and returns in that
header), so a caller can find its request among the captured ones; a request is sampled by a
hash of that id, so the shadow's answer to a captured request is captured too.
"""

from __future__ import annotations

import contextvars
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from rayline.data.capture_writer import CaptureWriter, Decode

# Outside a Serve request (a Python caller in this process): one id per task, which the shadow's
# task inherits, so its answer is still captured under its request's id.
_LOCAL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("rayline_capture_id", default=None)


def _serve_context() -> Callable[[], Any] | None:
    """Serve's getter of the request's context, looked up once (not imported on every request)."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context
    except ImportError:  # pragma: no cover - Ray Serve is a dependency
        return None


def _context(get: Callable[[], Any] | None) -> tuple[str, str]:
    """(request id, route) of the request being answered; a fresh id outside a Serve request."""
    request_id, route = "", ""
    if get is not None:
        try:
            context = get()
            request_id = context.request_id
            route = context.route or ("grpc" if context.grpc_context is not None else "")
        except Exception:  # outside a Serve replica (a plain app in tests)
            pass
    if not request_id:
        request_id = _LOCAL_ID.get() or uuid.uuid4().hex
        _LOCAL_ID.set(request_id)
    return request_id, route


def _replica() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a Serve replica
        return uuid.uuid4().hex[:8]


class Capture:
    """One replica's capture: the sampling, the ids, and the writer (``rayline.data.capture_writer``)."""

    def __init__(self, config: dict[str, Any], decode: Decode | None = None) -> None:
        self.fraction = float(config.get("fraction", 0.1))
        self._get_context = _serve_context()
        self.replica = _replica()
        self.writer = CaptureWriter(
            str(config["path"]),
            replica=self.replica,
            max_file_mb=float(config.get("max_file_mb", 64.0)),
            max_file_s=float(config.get("max_file_s", 60.0)),
            max_queue_mb=float(config.get("max_queue_mb", 64.0)),
            decode=decode,
        )

    def sampled(self, request_id: str) -> bool:
        if self.fraction >= 1.0:
            return True
        return zlib.crc32(request_id.encode()) % 100_000 < self.fraction * 100_000

    def record(
        self, items: Any, results: list[dict[str, Any]], *, model: str, role: str, took_s: float, is_body: bool = False
    ) -> None:
        """Hand an answered request to the writer when it is sampled; never raises, never waits.

        All the request pays: its id, the sampling, and a tuple of references queued (no copy,
        no encoding: the writer's thread does that)."""
        request_id, route = _context(self._get_context)
        if self.fraction < 1.0 and not self.sampled(request_id):
            return
        self.writer.put(request_id, time.time(), took_s, model, role, route, items, results, is_body)

    def summary(self) -> dict[str, Any]:
        """What ``/healthz`` shows: requests captured, dropped (queue full), files written, errors."""
        return {"path": self.writer.path, "fraction": self.fraction, **self.writer.stats()}

    def close(self) -> None:
        self.writer.close()
