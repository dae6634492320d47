"""Shared helpers for the ratio benchmarks: timing subprocesses, medians, markdown tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results"


def timed(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> tuple[float, str]:
    """Wall seconds of a whole command, and its stdout. Fails loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        if not isinstance(v, float):
            return str(v)
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
