"""Soak: minutes of mixed valid and invalid traffic at 16 clients against the taxi and mnist services.

Passes when no valid request fails, every invalid one gets the 4xx it should, every Serve
process's RSS stays within 10% of its size after warm-up, and p99 stays steady (last window's
p99 within 2x the first one after warm-up). Prints one JSON line per service and a table; docs/reliability.md
records the figures.

    python benchmarks/soak_serve.py --minutes 5          # both services, one after the other
    python benchmarks/soak_serve.py --only taxi --minutes 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("rayline")
TAXI = {
    "passenger_count": 1,
    "trip_distance": 2.5,
    "fare_amount": 12.0,
    "trip_duration": 600,
    "hour": 18,
    "day_of_week": 3,
}
WARMUP_S = 60.0
WINDOW_S = 30.0


def _digit() -> list[list[int]]:
    rng = random.Random(7)
    return [[rng.randrange(0, 256) if 8 <= r <= 20 and 12 <= c <= 15 else 0 for c in range(28)] for r in range(28)]


def mixes() -> dict[str, list[tuple[str, bytes, dict[str, str], int]]]:
    """Per service: (kind, body, extra headers, expected status), drawn with these weights."""
    bad_json = b'[{"trip_distance": 2'
    digit = _digit()
    return {
        "taxi": [
            *[("valid", json.dumps([TAXI]).encode(), {}, 200)] * 14,
            ("valid-batch", json.dumps([TAXI] * 32).encode(), {}, 200),
            ("not-json", bad_json, {}, 400),
            ("text-number", json.dumps([{**TAXI, "trip_distance": "far"}]).encode(), {}, 422),
            ("infinity", json.dumps([TAXI]).replace("2.5", "1e400").encode(), {}, 422),
            ("boolean", json.dumps([{**TAXI, "hour": True}]).encode(), {}, 422),
            ("unknown-model", json.dumps([TAXI]).encode(), {"serve_multiplexed_model_id": "0123456789abcdef"}, 404),
        ],
        "mnist": [
            *[("valid", json.dumps({"image": [digit]}).encode(), {}, 200)] * 14,
            ("valid-batch", json.dumps({"image": [digit] * 8}).encode(), {}, 200),
            ("not-json", b'{"image": [[1', {}, 400),
            ("out-of-range", json.dumps({"image": [[[300] * 28] * 28]}).encode(), {}, 422),
            ("wrong-shape", json.dumps({"image": [[[0] * 27] * 28]}).encode(), {}, 422),
            ("not-an-image", json.dumps({"image": ["aGVsbG8="]}).encode(), {}, 422),
            ("unknown-model", json.dumps({"image": [digit], "model": "0123456789abcdef"}).encode(), {}, 404),
        ],
    }


@dataclass
class Tally:
    sent: dict[str, int] = field(default_factory=dict)
    wrong: dict[str, int] = field(default_factory=dict)  # kind -> answers other than expected
    windows: list[list[float]] = field(default_factory=list)  # latencies (ms) of valid requests per window


async def _client(
    host: str,
    port: int,
    mix: list[tuple[str, bytes, dict[str, str], int]],
    tally: Tally,
    start: float,
    end: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (now := time.perf_counter()) < end:
            kind, body, headers, expected = rng.choice(mix)
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            request = (
                f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                closing = b"connection: close" in head.lower()
            except (asyncio.IncompleteReadError, ConnectionError, AttributeError):
                status, closing = 0, True
            tally.sent[kind] = tally.sent.get(kind, 0) + 1
            if status != expected:
                tally.wrong[kind] = tally.wrong.get(kind, 0) + 1
            if kind.startswith("valid"):
                window = int((now - start) // WINDOW_S)
                while len(tally.windows) <= window:
                    tally.windows.append([])
                tally.windows[window].append((time.perf_counter() - now) * 1000)
            if closing:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


def serve_processes(service_pid: int) -> dict[str, int]:
    """RSS (bytes) of each Ray process of this service (its session): controller, replicas, proxy, HAProxy."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != service_pid or int(entry) == service_pid:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            rss = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
        if cmd.startswith("ray::Serve") or cmd.startswith("ray::Proxy") or "haproxy" in cmd:
            label = "haproxy" if "haproxy" in cmd else cmd.split()[0]
            out[f"{label}[{entry}]"] = rss
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def soak(name: str, spec: list[str], env: dict[str, str], seconds: float, port: int) -> dict[str, object]:
    done = subprocess.run([str(BIN), "train", *spec], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    proc = subprocess.Popen(
        [str(BIN), "serve", *spec, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        import urllib.request

        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"{name} service did not start") from None
                time.sleep(1)
        tally, rss = Tally(), []

        async def drive() -> None:
            start = time.perf_counter()
            end = start + seconds
            clients = [
                asyncio.create_task(_client("127.0.0.1", port, mixes()[name], tally, start, end, seed))
                for seed in range(16)
            ]
            while time.perf_counter() < end:
                rss.append((time.perf_counter() - start, serve_processes(proc.pid)))
                await asyncio.sleep(10)
            await asyncio.gather(*clients)

        asyncio.run(drive())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    after_warmup = next((sample for t, sample in rss if t >= WARMUP_S), rss[0][1])
    final = rss[-1][1]
    growth = {k: final[k] / v - 1 for k, v in after_warmup.items() if k in final}
    valid = sum(n for k, n in tally.sent.items() if k.startswith("valid"))
    windows = [w for w in tally.windows if w]
    steady = windows[int(WARMUP_S // WINDOW_S) :] or windows  # p99 compared after warm-up
    return {
        "service": name,
        "seconds": seconds,
        "requests": sum(tally.sent.values()),
        "valid": valid,
        "valid_failed": sum(n for k, n in tally.wrong.items() if k.startswith("valid")),
        "invalid_misanswered": sum(n for k, n in tally.wrong.items() if not k.startswith("valid")),
        "misanswered_by_kind": tally.wrong,
        "rps": round(sum(tally.sent.values()) / seconds, 1),
        "p99_ms_after_warmup": round(pct(steady[0], 99), 2),
        "p99_ms_last_window": round(pct(steady[-1], 99), 2),
        "p99_ms_by_window": [round(pct(w, 99), 1) for w in windows],
        "rss_mb_after_warmup": {k: round(v / 2**20) for k, v in after_warmup.items()},
        "rss_growth_max": round(max(growth.values()), 4) if growth else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--only", choices=["taxi", "mnist"])
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="rayline-soak-")
    env = {**os.environ, "RAYLINE_HOME": home}
    env.pop("RAY_ADDRESS", None)
    examples = REPO / "examples"
    specs = {
        "taxi": [str(examples / "taxi.yaml"), "--set", "data.rows=20000", "--set", "serve.num_replicas=2"],
        "mnist": [
            str(examples / "mnist.yaml"),
            "--set",
            "model.epochs=1",
            "--set",
            "serve.autoscaling.initial_replicas=2",
        ],
    }
    results = []
    for name, spec in specs.items():
        if args.only and name != args.only:
            continue
        from rayline.serving.ports import free_port

        result = soak(name, spec, env, args.minutes * 60, free_port())
        print(json.dumps(result), flush=True)
        results.append(result)
    ok = all(
        r["valid_failed"] == 0
        and r["invalid_misanswered"] == 0
        and (r["rss_growth_max"] or 0) < 0.10
        and r["p99_ms_last_window"] <= 2 * r["p99_ms_after_warmup"]  # type: ignore[operator]
        for r in results
    )
    print("soak:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
