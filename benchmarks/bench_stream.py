"""Stream N taxi rows through ``POST /predict/stream`` of a running service; report rows/s and the
memory of the service's model replicas (their peak RSS, VmHWM) before and after.

    rayline serve examples/taxi.yaml --model best --port 8000 --set serve.num_replicas=1 &
    .venv/bin/python benchmarks/bench_stream.py --url http://127.0.0.1:8000 --rows 1000000

The rows are generated as they are sent (the client holds one block at a time) and the
predictions are read as they arrive, so neither side needs the whole stream in memory.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Iterator

import numpy as np

BLOCK = 10_000


def rows(n: int, seed: int = 0) -> Iterator[bytes]:
    """NDJSON taxi trips with the served model's features, BLOCK rows per yielded chunk."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, BLOCK):
        size = min(BLOCK, n - start)
        cols = {
            "passenger_count": rng.integers(1, 5, size).astype(float),
            "trip_distance": rng.gamma(2.0, 1.5, size).round(2),
            "fare_amount": rng.gamma(3.0, 5.0, size).round(2),
            "trip_duration": rng.integers(60, 3600, size),
            "hour": rng.integers(0, 24, size),
            "day_of_week": rng.integers(0, 7, size),
        }
        lines = (json.dumps({k: v[i].item() for k, v in cols.items()}) for i in range(size))
        yield ("\n".join(lines) + "\n").encode()


def replica_peaks() -> dict[int, int]:
    """Peak RSS (kB) of every Serve model replica process on this machine."""
    peaks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if not fh.read().startswith(b"ray::ServeReplica:"):
                    continue
            with open(f"/proc/{entry}/status") as fh:
                peaks[int(entry)] = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))
        except (OSError, StopIteration):
            continue
    return peaks


def stream(url: str, n: int) -> tuple[int, float, int]:
    """(predictions read, seconds, bytes sent)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for block in rows(n):
            sent += len(block)
            yield block

    start = time.perf_counter()
    conn.request("POST", "/predict/stream", body=body(), headers={"Content-Type": "application/x-ndjson"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:500]
    got, pending = 0, b""
    while chunk := resp.read1(1 << 16):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        got += len(lines)
        if lines and lines[-1].startswith(b'{"error"'):
            raise RuntimeError(lines[-1].decode())
    return got, time.perf_counter() - start, sent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    before = replica_peaks()
    got, seconds, sent = stream(args.url, args.rows)
    after = replica_peaks()
    assert got == args.rows, f"{got} predictions for {args.rows} rows"
    print(f"{args.rows:,} rows ({sent / 1e6:.0f} MB of NDJSON) in {seconds:.1f} s: {args.rows / seconds:,.0f} rows/s")
    for pid, peak in sorted(after.items()):
        print(f"replica {pid}: peak RSS {before.get(pid, 0) / 1024:.0f} MiB before, {peak / 1024:.0f} MiB after")


if __name__ == "__main__":
    main()
