"""The capture writer: answered requests -> whole parquet files, off the request path.

A request only hands its items and answers to ``CaptureWriter.offer`` (a size estimate and an
append under a lock); a background thread encodes them (records as JSON, images as PNG) and
writes a file when the rows it holds pass ``max_file_mb`` or the oldest is ``max_file_s`` old.

- Memory is bounded: requests waiting to be encoded are held up to ``max_queue_mb`` (estimated);
  past it a request is dropped and counted (``stats()["dropped"]``), never waited for.
- Each file is written whole: under a temporary name starting with a dot in the same folder,
  then renamed (one rename(2) on a local disk); on object storage (``s3://``) an object appears
  only once its upload completes. A process killed mid-write leaves at most a dot-file, which
  readers skip, never a torn ``capture-*.parquet``.
- ``close()`` (a replica's graceful stop) writes what is held, then stops the thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from rayline.data.capture import SCHEMA, filesystem_of, is_uri, rows

log = logging.getLogger(__name__)
Decode = Callable[[Any], list[Any]]


@dataclass
class Answered:
    """One answered request, as the router saw it (``items`` decoded, or a body when ``decode`` is needed)."""

    request_id: str
    time_s: float  # epoch seconds when answered
    latency_s: float
    model: str
    role: str
    route: str
    items: Any
    results: list[dict[str, Any]]
    is_body: bool = False


def estimate_bytes(items: Any, results: list[dict[str, Any]]) -> int:
    """A cheap size guess (the request path pays it): the first item's size times their number."""
    n = len(results) or 1
    first = items[0] if isinstance(items, list) and items else items
    if isinstance(items, np.ndarray) and items.ndim > 0:
        first = items[0]
    if isinstance(first, np.ndarray):
        size = first.nbytes
    elif isinstance(first, dict):
        size = 48 * len(first) + 64
        if isinstance(first.get("image"), list):  # an image body (composed topology)
            size = 4 * 1024 * max(1, len(first["image"]))
    elif isinstance(first, str | bytes):
        size = len(first)
    else:
        size = 256
    return n * (size + 128)  # + the answer


class CaptureWriter:
    def __init__(
        self,
        path: str,
        *,
        replica: str,
        max_file_mb: float = 64.0,
        max_file_s: float = 300.0,
        max_queue_mb: float = 64.0,
        decode: Decode | None = None,
    ) -> None:
        self.path, self.replica = path.rstrip("/"), replica
        self.max_file_bytes = int(max_file_mb * 1024 * 1024)
        self.max_file_s = max_file_s
        self.max_queue_bytes = int(max_queue_mb * 1024 * 1024)
        self.decode = decode
        self._filesystem, self._root = filesystem_of(self.path)
        self._local = not is_uri(self.path)
        if self._local:
            self._filesystem.create_dir(self._root, recursive=True)
        self._queue: deque[tuple[Answered, int]] = deque()
        self._queued_bytes = 0
        self._lock = threading.Condition()
        self._closing = False
        self._buffer: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self._buffer_bytes = 0
        self._buffer_since: float | None = None
        self._seq = 0
        self._counts = {"requests": 0, "rows": 0, "dropped": 0, "files": 0, "errors": 0}
        self._flush_asked = threading.Event()
        self._flushed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rayline-capture", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the request's side
    def offer(self, answered: Answered) -> bool:
        """Hand a request over; False (and counted) when the queue is full or the writer closed."""
        size = estimate_bytes(answered.items, answered.results)
        with self._lock:
            if self._closing or self._queued_bytes + size > self.max_queue_bytes:
                self._counts["dropped"] += 1
                return False
            self._queue.append((answered, size))
            self._queued_bytes += size
            self._lock.notify()
        return True

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "queued_bytes": self._queued_bytes, "buffered_rows": len(self._buffer["item"])}

    def flush(self, timeout_s: float = 30.0) -> None:
        """Write everything handed over so far (tests; a graceful stop uses ``close``)."""
        self._flushed.clear()
        self._flush_asked.set()
        with self._lock:
            self._lock.notify()
        self._flushed.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is held and stop the thread (idempotent)."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ the thread's side
    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue and not self._closing and not self._flush_asked.is_set():
                    self._lock.wait(timeout=self._wait_s())
                taken = list(self._queue)
                self._queue.clear()
                closing = self._closing
            for answered, size in taken:
                self._add(answered)
                with self._lock:
                    self._queued_bytes -= size
                if self._buffer_bytes >= self.max_file_bytes:  # rolled by size as rows come
                    self._write()
            flush = self._flush_asked.is_set()
            if closing or flush or self._due():
                self._write()
            if flush:
                self._flush_asked.clear()
                self._flushed.set()
            if closing:
                return

    def _wait_s(self) -> float:
        if self._buffer_since is None:
            return 1.0
        return max(0.01, min(1.0, self._buffer_since + self.max_file_s - time.monotonic()))

    def _due(self) -> bool:
        if self._buffer_since is None:
            return False
        return self._buffer_bytes >= self.max_file_bytes or time.monotonic() - self._buffer_since >= self.max_file_s

    def _add(self, answered: Answered) -> None:
        try:
            items = self.decode(answered.items) if answered.is_body and self.decode else answered.items
            if len(items) != len(answered.results):
                raise ValueError(f"{len(items)} inputs for {len(answered.results)} answers")
            columns = rows(
                request_id=answered.request_id,
                time_us=int(answered.time_s * 1_000_000),
                latency_ms=answered.latency_s * 1000,
                model=answered.model,
                role=answered.role,
                route=answered.route,
                replica=self.replica,
                items=list(items),
                results=answered.results,
            )
        except Exception as err:  # one odd request must not stop the capture
            with self._lock:
                self._counts["errors"] += 1
            log.warning("could not capture request %s: %s", answered.request_id, err)
            return
        for name, values in columns.items():
            self._buffer[name].extend(values)
        self._buffer_bytes += sum(len(v or "") for v in columns["input"]) + sum(len(v or b"") for v in columns["image"])
        self._buffer_bytes += sum(len(v) for v in columns["output"]) + 96 * len(columns["item"])
        if self._buffer_since is None:
            self._buffer_since = time.monotonic()
        with self._lock:
            self._counts["requests"] += 1

    def _write(self) -> None:
        count = len(self._buffer["item"])
        if not count:
            return
        table = pa.Table.from_pydict(self._buffer, schema=SCHEMA)
        self._buffer = {name: [] for name in SCHEMA.names}
        self._buffer_bytes, self._buffer_since = 0, None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._seq += 1
        name = f"capture-{stamp}-{self.replica[:12]}-{self._seq:05d}-{uuid.uuid4().hex[:6]}.parquet"
        try:
            self._write_whole(table, name)
        except Exception as err:  # storage down: these rows are lost, counted, and the capture goes on
            with self._lock:
                self._counts["errors"] += 1
            log.warning("could not write capture file %s/%s: %s", self.path, name, err)
            return
        with self._lock:
            self._counts["files"] += 1
            self._counts["rows"] += count

    def _write_whole(self, table: pa.Table, name: str) -> None:
        import pyarrow.parquet as pq

        final = f"{self._root}/{name}"
        if not self._local:  # an object is visible only once its upload completes
            pq.write_table(table, final, filesystem=self._filesystem, compression="zstd")
            return
        temporary = f"{self._root}/.{name}.tmp"
        try:
            pq.write_table(table, temporary, filesystem=self._filesystem, compression="zstd")
            self._filesystem.move(temporary, final)
        except BaseException:
            with contextlib.suppress(OSError):
                self._filesystem.delete_file(temporary)
            raise
