"""HTTP helpers for the serving tests: a free port, one JSON call, a `rayline serve` subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCRIPT = Path(sys.executable).with_name("rayline")


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+) and above Ray's worker ports (<20000).

    The service binds it seconds later, after Ray has opened many outgoing connections; an
    ephemeral port could be taken by one of those in between.
    """
    for _ in range(100):
        port = random.randint(20000, 29999)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


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
    args: list[str], env: dict[str, str], timeout_s: float = 240
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``rayline serve ARGS --port P`` until /healthz answers; SIGINT (Ctrl-C) on exit."""
    port = free_port()
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
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _kill_all(proc)  # Ray's processes may outlive a driver that failed
            raise AssertionError(f"rayline serve exited early:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            if call(f"{url}/healthz")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)
    else:
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


def _kill_all(proc: subprocess.Popen[str]) -> None:
    """SIGKILL whatever is left in the service's process group (nothing, after a clean stop)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
