"""HTTP helpers for the serving tests: a free port, one JSON call, a `rayline serve` subprocess."""

from __future__ import annotations

import json
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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rayline serve exited early:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            if call(f"{url}/healthz")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)
    else:
        proc.kill()
        raise AssertionError("service did not become healthy")
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
