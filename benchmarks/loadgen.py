"""A small HTTP/1.1 load client on raw keep-alive sockets (asyncio + uvloop).

Generic Python HTTP clients top out near 800 req/s on this machine and would hide the
difference between servers; this one pre-builds the request bytes and parses only the status
line and Content-Length. Loopback only; bounded by request count and a deadline.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000/predict --body body.json -c 16 -n 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 3),
            "p99_ms": round(self.pct(99), 3),
            "errors": self.errors,
            "requests": self.requests,
        }


async def _worker(host: str, port: int, payload: bytes, count: int, deadline: float, lat: list[float]) -> int:
    """``count`` requests on one keep-alive connection; a connection the server drops (a 5xx
    with ``Connection: close``, a restart) counts as an error and is opened again."""
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(count):
            if time.perf_counter() > deadline:
                break
            start = time.perf_counter()
            try:
                writer.write(payload)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                closing = b"connection: close" in head.lower()
            except (asyncio.IncompleteReadError, ConnectionError):
                status, closing = 0, True
            lat.append((time.perf_counter() - start) * 1000)
            if status != 200:
                errors += 1
            if closing:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()
    return errors


async def run(url: str, body: bytes, concurrency: int, total: int, timeout_s: float) -> LoadResult:
    parts = urlparse(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen only targets loopback addresses")
    payload = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body
    counts = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    lat: list[float] = []
    start = time.perf_counter()
    deadline = start + timeout_s
    workers = (_worker(host, port, payload, n, deadline, lat) for n in counts if n)
    errors = await asyncio.gather(*workers)
    return LoadResult(len(lat), sum(errors), time.perf_counter() - start, lat)


def load(url: str, body: bytes, concurrency: int, total: int, timeout_s: float = 60.0) -> LoadResult:
    try:
        import uvloop

        return uvloop.run(run(url, body, concurrency, total, timeout_s))
    except ImportError:
        return asyncio.run(run(url, body, concurrency, total, timeout_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", required=True, help="file with the JSON body")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("-n", "--requests", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    with open(args.body, "rb") as fh:
        body = fh.read()
    result = load(args.url, body, args.concurrency, args.requests, args.timeout)
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
