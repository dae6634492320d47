"""Progress of long CLI work on stderr: rich's spinner on a terminal, timed lines elsewhere."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rich.console import Console

from rayline.errors import SpecError


class LineStatus:
    """Progress on a stderr that is not a terminal (CI logs, ``nohup``, a pipe), where rich's
    spinner draws nothing: the current text as a line once the work has taken half of
    ``RAYLINE_PROGRESS_S`` (default 30), then at most one every ``RAYLINE_PROGRESS_S`` (a new stage
    of ``rayline run`` at once). A command that ends sooner prints nothing more, so a quick
    failure is still one line."""

    def __init__(self, console: Console, text: str) -> None:
        self.console = console
        self.every_s = _progress_every_s()
        self.first_s = self.every_s / 2
        self.text, self.started, self.printed = text, time.monotonic(), -1.0e9
        self.updated = self.started
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._tick, name="rayline-progress", daemon=True)

    def __enter__(self) -> LineStatus:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=2)

    def update(self, text: str, *, stage: bool = False) -> None:
        with self._lock:
            self.text, self.updated = text, time.monotonic()
        if stage:
            self._maybe_print(self.every_s)

    def _tick(self) -> None:
        while not self._done.wait(1.0):
            self._maybe_print(0.0)

    def _maybe_print(self, early_by: float) -> None:
        now = time.monotonic()
        if self._done.is_set() or now - self.started < self.first_s or now - self.printed < self.every_s - early_by:
            return
        with self._lock:
            text, stale = self.text, now - self.updated >= 1.0
            self.printed = now
        elapsed = now - self.started
        if not text.endswith("]"):  # the commands' report lines carry their own times
            text = f"{text}  [{elapsed:.0f} s]"
        elif stale:  # a report's time is when it came: say the work goes on
            text = f"{text}  (still running at {elapsed:.0f} s)"
        self.console.print(text, markup=False)


class TerminalStatus:
    """rich's spinner, with the ``stage`` flag the line form needs."""

    def __init__(self, console: Console, text: str) -> None:
        self._status = console.status(text)

    def __enter__(self) -> TerminalStatus:
        self._status.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._status.__exit__(*exc)

    def update(self, text: str, *, stage: bool = False) -> None:
        self._status.update(text)


def _progress_every_s() -> float:
    raw = os.environ.get("RAYLINE_PROGRESS_S", "30")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SpecError(f"RAYLINE_PROGRESS_S={raw!r}: expected seconds between progress lines, a number > 0")
    return value


def progress_status(console: Console, text: str) -> TerminalStatus | LineStatus:
    """Progress of long work on stderr: a spinner on a terminal, timed lines elsewhere."""
    return TerminalStatus(console, text) if console.is_terminal else LineStatus(console, text)
