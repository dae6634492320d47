"""The capture writer: answered requests -> whole parquet files, off the request path.

A request only hands references to its items and answers to ``CaptureWriter.put`` (a size
estimate and a tuple appended under a lock: no encoding, no copy, no wake-up). A background
thread takes what was handed over every tenth of a second, encodes it (records as JSON, images as
PNG) and writes a file when the rows it holds pass ``max_file_mb`` or the oldest is ``max_file_s``
old. Taking in batches keeps the thread from waking (and contending for the GIL) once a request.

- Memory is bounded: requests waiting to be encoded are held up to ``max_queue_mb`` (estimated);
  past it a request is dropped and counted (``stats()["dropped"]``), never waited for. A queue a
  quarter full wakes the thread early, so a burst is taken before it is dropped.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from rayline.data.capture import Row, encode_rows, filesystem_of, is_uri, row_bytes, table_of

log = logging.getLogger(__name__)
Decode = Callable[[Any], list[Any]]
POLL_S = 0.1  # how often the thread takes what requests handed over (sooner when the queue fills)
YIELD_EVERY = 64  # requests encoded between two releases of the GIL (the requests' latency)

# What a request hands over: (estimated bytes, request id, epoch s, latency s, model, role, route,
# items, results, is_body). A tuple: the cheapest thing to make on the request path.
Entry = tuple[int, str, float, float, str, str, str, Any, list[dict[str, Any]], bool]


@dataclass(slots=True)
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
    first = items
    if isinstance(items, list):
        first = items[0] if items else None
    elif isinstance(items, np.ndarray) and items.ndim > 0 and len(items):
        first = items[0]
    if isinstance(first, dict):
        size = 48 * len(first) + 64
        if isinstance(first.get("image"), list):  # an image body (composed topology)
            size = 4 * 1024 * max(1, len(first["image"]))
    elif isinstance(first, np.ndarray):
        size = first.nbytes
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
        # The request's side: a list swapped whole by the thread; the lock guards it and the counts.
        self._queue: list[Entry] = []
        self._queued_bytes = 0
        self._wake_bytes = self.max_queue_bytes // 4
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = False
        # The thread's side: encoded rows waiting for a file.
        self._rows: list[Row] = []
        self._buffer_bytes = 0
        self._buffer_since: float | None = None
        self._seq = 0
        self._counts = {"requests": 0, "rows": 0, "dropped": 0, "files": 0, "errors": 0}
        self._flush_asked = threading.Event()
        self._flushed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rayline-capture", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the request's side
    def put(
        self,
        request_id: str,
        time_s: float,
        latency_s: float,
        model: str,
        role: str,
        route: str,
        items: Any,
        results: list[dict[str, Any]],
        is_body: bool = False,
    ) -> bool:
        """Hand a request over (references, not copies); False (and counted) when full or closed."""
        size = estimate_bytes(items, results)
        with self._lock:
            queued = self._queued_bytes + size
            if queued > self.max_queue_bytes or self._closing:
                self._counts["dropped"] += 1
                return False
            self._queue.append((size, request_id, time_s, latency_s, model, role, route, items, results, is_body))
            self._queued_bytes = queued
        if queued > self._wake_bytes and not self._wake.is_set():  # a burst: take it now, not drop it
            self._wake.set()
        return True

    def offer(self, answered: Answered) -> bool:
        """``put`` for an ``Answered``."""
        a = answered
        return self.put(a.request_id, a.time_s, a.latency_s, a.model, a.role, a.route, a.items, a.results, a.is_body)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "queued_bytes": self._queued_bytes, "buffered_rows": len(self._rows)}

    def flush(self, timeout_s: float = 30.0) -> None:
        """Write everything handed over so far (tests; a graceful stop uses ``close``)."""
        self._flushed.clear()
        self._flush_asked.set()
        self._wake.set()
        self._flushed.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is held and stop the thread (idempotent)."""
        with self._lock:
            self._closing = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ the thread's side
    def _run(self) -> None:
        while True:
            self._wake.wait(self._wait_s())
            self._wake.clear()
            # Read before taking: whatever was handed over before flush() was called is taken now.
            flush = self._flush_asked.is_set()
            with self._lock:
                taken, self._queue = self._queue, []
                closing = self._closing
            if taken:
                self._take(taken)
            if closing or flush or self._due():
                self._write()
            if flush:
                self._flush_asked.clear()
                self._flushed.set()
            if closing:
                return

    def _wait_s(self) -> float:
        if self._buffer_since is None:
            return POLL_S
        return max(0.01, min(POLL_S, self._buffer_since + self.max_file_s - time.monotonic()))

    def _due(self) -> bool:
        if self._buffer_since is None:
            return False
        return self._buffer_bytes >= self.max_file_bytes or time.monotonic() - self._buffer_since >= self.max_file_s

    def _take(self, taken: list[Entry]) -> None:
        added = 0
        for n, entry in enumerate(taken, 1):
            added += self._add(entry)
            if self._buffer_bytes >= self.max_file_bytes:  # rolled by size as rows come
                self._write()
            if n % YIELD_EVERY == 0:  # let a request waiting for the GIL run now, not after a switch interval
                time.sleep(0)
        with self._lock:  # counted out once encoded: the queue's bound covers them until then
            self._queued_bytes -= sum(entry[0] for entry in taken)
            self._counts["requests"] += added
            self._counts["errors"] += len(taken) - added

    def _add(self, entry: Entry) -> bool:
        _, request_id, time_s, latency_s, model, role, route, items, results, is_body = entry
        try:
            if is_body and self.decode is not None:
                items = self.decode(items)
            if len(items) != len(results):
                raise ValueError(f"{len(items)} inputs for {len(results)} answers")
            held = encode_rows(
                request_id=request_id,
                time_us=int(time_s * 1_000_000),
                latency_ms=latency_s * 1000,
                model=model,
                role=role,
                route=route,
                items=items,
                results=results,
            )
        except Exception as err:  # one odd request must not stop the capture
            log.warning("could not capture request %s: %s", request_id, err)
            return False
        self._rows.extend(held)
        self._buffer_bytes += sum(row_bytes(row) for row in held)
        if self._buffer_since is None:
            self._buffer_since = time.monotonic()
        return True

    def _write(self) -> None:
        count = len(self._rows)
        if not count:
            return
        table = table_of(self._rows, self.replica)
        self._rows = []
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
