"""HTTP helpers for the serving tests: a free port (the library's), one JSON call, a `rayline serve` subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rayline.serving.ports import free_port

SCRIPT = Path(sys.executable).with_name("rayline")
# One taxi trip with the served model's features (examples/taxi.yaml).
TAXI_RECORD = {
    "passenger_count": 1,
    "trip_distance": 2.5,
    "fare_amount": 12.0,
    "trip_duration": 600,
    "hour": 18,
    "day_of_week": 3,
}


def call(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:  # e.g. HAProxy's HTML 503 page while replicas start
            return err.code, raw


def _sigint_as_from_a_terminal() -> None:
    """Runs in the service's process before it starts: SIGINT back to its default action.

    A shell without job control starts background commands with SIGINT ignored, children
    inherit that, and Python then leaves it ignored (as POSIX intends): a test run launched
    that way would send Ctrl-C to a service that never sees it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def serving(
    args: list[str], env: dict[str, str], timeout_s: float = 240, port: int | None = None, idle: bool = False
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``rayline serve ARGS --port P`` until /healthz answers; SIGINT (Ctrl-C) on exit.

    P is a free port by default; with ``port=0`` the service picks one and the URL is read
    from what it prints. ``idle``: a service that scales to zero; ready once it says it is idle
    (asking /healthz would wake a replica)."""
    port = free_port() if port is None else port
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_from_a_terminal,
        # Its own process group: Ray's processes and HAProxy start in it, so a service that
        # does not stop can be ended with everything it started, leaving nothing behind.
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}" if port else _printed_url(proc, deadline)
    if idle:
        _printed(proc, deadline, r"idle: no model replica runs")
    while not idle and time.monotonic() < deadline:
        if proc.poll() is not None:
            _kill_all(proc)  # Ray's processes may outlive a driver that failed
            raise AssertionError(f"rayline serve exited early:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            if call(f"{url}/healthz")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):  # a slow /healthz under load: ask again
            pass
        time.sleep(0.25)
    else:
        if not idle:
            _kill_all(proc)
            raise AssertionError("service did not become healthy")
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=90)
        _kill_all(proc)


def _printed_url(proc: subprocess.Popen[str], deadline: float) -> str:
    """The service's URL, from its "predict  POST <url>/predict" line."""
    return _printed(proc, deadline, r"POST (http://\S+)/predict").group(1)


def _printed(proc: subprocess.Popen[str], deadline: float, pattern: str) -> re.Match[str]:
    """The first match of ``pattern`` in what the service prints (stdout)."""
    assert proc.stdout is not None
    # The pipe itself, not the text wrapper: a line the wrapper had already buffered would
    # never make select() report the pipe readable again.
    fd, printed = proc.stdout.fileno(), ""
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([fd], [], [], 1)[0]:
            printed += os.read(fd, 65536).decode(errors="replace")
            if match := re.search(pattern, printed):
                return match
    _kill_all(proc)
    raise AssertionError(f"rayline serve printed no {pattern!r}:\n{printed}{proc.stderr.read() if proc.stderr else ''}")


def _kill_all(proc: subprocess.Popen[str]) -> None:
    """SIGKILL whatever is left in the service's process group (nothing, after a clean stop)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# The Open Inference Protocol's infer body is typed by the model's metadata, not by the OpenAPI
# document: a body the schema allows (any tensor) is refused with 400 when its names, datatypes
# or shapes do not fit the model (tests/oip.py checks those answers through the standard client).
# Likewise /predict/stream's lines (NDJSON, which JSON Schema does not describe).
OIP_INFER = """
[[operations]]
include-path-regex = "/infer$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

[[operations]]
include-path-regex = "/predict/stream$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "422"]
"""


def fuzz(url: str, workdir: Path, *, config: str = "", examples: int = 100) -> str:
    """schemathesis, every check on, against the service's own /openapi.json; its report on failure.

    ``config``: schemathesis.toml text, for what JSON Schema cannot say (a caller states why)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "schemathesis.toml").write_text(config + OIP_INFER)
    st = Path(sys.executable).with_name("st")
    args = [str(st), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(examples)]
    done = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]  # non-zero on any failed check
    assert re.search(r"\d+ generated, \d+ passed", done.stdout), done.stdout[-3000:]
    return done.stdout
