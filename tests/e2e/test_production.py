"""docs/production.md, run command for command: promotion, canary, shadow, explanations, drift,
and a running service following its alias. Every `rayline` command of the page's bash blocks is
run here exactly as written (with the run ids for $A and $B), and nothing else is: `rayline serve`
as a process of its own (a service, stopped with Ctrl-C), the others through the CLI's entry point
in this process (tests/inprocess.py), which saves an interpreter and its imports per command."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from inprocess import rayline_here
from service import SCRIPT, _printed, call, serving

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "production.md").read_text()
FEATURES = ("passenger_count", "trip_distance", "fare_amount", "trip_duration", "hour", "day_of_week")


def doc_commands() -> list[str]:
    """The `rayline ...` lines of the page's bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("rayline ")]


class Walk:
    def __init__(self, cwd: Path, env: dict[str, str], capfd: pytest.CaptureFixture[str]) -> None:
        self.cwd, self.env, self.capfd, self.ran = cwd, env, capfd, []
        self.runs: dict[str, str] = {}

    def argv(self, start: str) -> list[str]:
        """The page's one command that starts with ``start`` (comments dropped), ready to run."""
        commands = doc_commands()
        found = [start] if start in commands else [c for c in commands if c.startswith(start + " ")]
        assert len(found) == 1, f"{len(found)} commands of docs/production.md start with {start!r}"
        self.ran.append(found[0])
        command = found[0]
        for name, run_id in self.runs.items():
            command = command.replace(f"${name}", run_id)
        return [str(SCRIPT), *shlex.split(command, comments=True)[1:]]

    def run(self, command: str, *, code: int = 0) -> subprocess.CompletedProcess[str]:
        """The page's command in this process, from the walk's folder; the file descriptors are
        captured, so what C++ (xgboost) prints counts as a process's output would."""
        args = self.argv(command)[1:]
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(self.cwd)
            done = subprocess.CompletedProcess(args, *rayline_here(self.capfd, *args))
        assert done.returncode == code, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done


def records(seed: int, rows: int, trip_scale: float = 1.0) -> list[dict[str, Any]]:
    from rayline.datasets.taxi import generate_taxi

    scale = {} if trip_scale == 1.0 else {"trip_scale": trip_scale}
    frame = generate_taxi(rows, seed=seed, **scale).to_pandas()
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[list(FEATURES)].to_dict("records")
    ]


def predict(url: str, record: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    status, body = call(
        f"{url}/predict", json.dumps([record]).encode(), {"Content-Type": "application/json", **(headers or {})}
    )
    assert status == 200, body
    return body


def predict_many(url: str, rows: list[dict[str, Any]]) -> bool:
    status, body = call(f"{url}/predict", json.dumps(rows).encode(), {"Content-Type": "application/json"})
    assert status == 200 and len(body["predictions"]) == len(rows), body
    return True


def health(url: str) -> dict[str, Any]:
    status, body = call(f"{url}/healthz")
    assert status == 200, body
    return body


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_production_walkthrough(tmp_path: Path, rayline_home: Path, capfd: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "RAYLINE_HOME": str(rayline_home)}
    (tmp_path / "examples").symlink_to(REPO / "examples")
    walk = Walk(tmp_path, env, capfd)
    commands = doc_commands()

    # Two models of the same spec: a quick one ($A) and a full one ($B).
    quick, full = (c.split("  #")[0].strip() for c in commands if c.startswith("rayline train "))
    walk.runs["A"] = re.search(r"run ([0-9a-f]{32})", walk.run(quick).stdout).group(1)  # type: ignore[union-attr]
    walk.runs["B"] = re.search(r"run ([0-9a-f]{32})", walk.run(full).stdout).group(1)  # type: ignore[union-attr]
    a, b = walk.runs["A"], walk.runs["B"]

    # 1. Promotion: first promotions set the aliases; a worse candidate is refused with its margin.
    assert "is now champion" in walk.run("rayline promote $A --alias champion").stdout
    walk.run("rayline promote $B --alias challenger")
    listed = walk.run("rayline models list").stdout
    assert "champion" in listed and "challenger" in listed and a in listed and b in listed
    refused = walk.run("rayline promote $A --alias challenger", code=1)
    assert re.search(r"worse than challenger .* logloss \d\.\d+ vs \d\.\d+ \(\+\d\.\d+", refused.stderr), refused.stderr

    # The served model as its own shadow: refused before any replica starts (it compared nothing).
    itself = subprocess.run(
        [str(SCRIPT), "serve", "examples/taxi.yaml", "--model", "champion", "--port", "0", "--shadow", "champion"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert itself.returncode == 1, itself.stderr
    assert f"serve.shadow 'champion' is the served model itself (run {a[:12]})" in itself.stderr, itself.stderr

    # 2. Canary: ~10% of the requests, sticky per key, counted per model.
    with serving(
        walk.argv("rayline serve examples/taxi.yaml --set data.rows=20000 --model champion --canary")[2:], env
    ) as (
        url,
        proc,
    ):
        answered = Counter(predict(url, r)["model"] for r in records(seed=11, rows=200))
        assert set(answered) == {a, b}
        assert 4 <= answered[b] <= 45, answered  # binomial(200, 0.1): 20 +- 4.2
        sticky = {predict(url, r, {"X-Route-Key": "rider-42"})["model"] for r in records(seed=12, rows=20)}
        assert len(sticky) == 1
        seen = health(url)
        assert seen["models"][a]["role"] == "primary" and seen["models"][b]["role"] == "canary"
        assert seen["models"][b]["requests"] == answered[b] + (20 if sticky == {b} else 0)
        assert seen["aliases"] == {"champion": a, "challenger": b}
        assert seen["canary"] == {"model": b, "percent": 10.0}
        # The same counts in Ray's metrics (Prometheus text), at the address the service printed.
        where = _printed(proc, time.monotonic() + 10, r"metrics\s+(http://\S+/metrics)").group(1)
        line = re.compile(rf'ray_rayline_model_requests_total{{[^}}]*model="{b}"[^}}]*role="canary"[^}}]*}} (\d+)')
        found = wait_for(lambda: line.search(scrape(where)), 60, "the canary's count in Ray's metrics")
        assert 0 < float(found.group(1)) <= seen["models"][b]["requests"]

    # 3. Shadow: every answer from the champion; the challenger's compared in the background.
    with serving(
        walk.argv("rayline serve examples/taxi.yaml --set data.rows=20000 --model champion --shadow")[2:], env
    ) as (
        url,
        proc,
    ):
        trips = records(seed=13, rows=100)
        assert {predict(url, r)["model"] for r in trips} == {a}
        shadow = wait_for(lambda: (s := health(url)["shadow"])["agreement"]["compared"] == 100 and s, 20, "the shadow")
        assert shadow["model"] == b and shadow["requests"] == 100 and shadow["errors"] == 0
        assert 0.5 <= shadow["agreement"]["label_agreement"] <= 1.0
        assert shadow["agreement"]["mean_abs_difference"] > 0  # two different models

        # Explanations: contributions that add up to the answer's margin (log-odds).
        status, explained = call(f"{url}/explain", json.dumps(trips[:2]).encode(), {"Content-Type": "application/json"})
        assert status == 200 and explained["model"] == a, explained
        for record, why in zip(trips[:2], explained["explanations"], strict=True):
            assert set(why["contributions"]) == set(record)
            assert why["bias"] + sum(why["contributions"].values()) == pytest.approx(why["margin"], abs=1e-3)
            p = predict(url, record)["predictions"][0]["probability"]
            assert 1 / (1 + math.exp(-why["margin"])) == pytest.approx(p, abs=1e-4)

        # Live drift: what the champion served, against its training profile.
        assert predict_many(url, records(seed=14, rows=1000))
        steady = health(url)["drift"]
        assert steady["status"] == "ok" and steady["rows"] == 1102 and steady["flagged"] == [], steady
        assert predict_many(url, records(seed=15, rows=3000, trip_scale=1.8))
        shifted = health(url)["drift"]
        assert shifted["status"] == "drift" and "trip_distance" in shifted["flagged"], shifted

        # 4. Promote the challenger: the running service follows the alias.
        walk.run("rayline promote $B --alias champion")
        wait_for(lambda: health(url)["model_run_id"] == b, 30, "the service to follow the alias")
        assert predict(url, trips[0])["model"] == b
        roles = health(url)["models"]
        assert roles[b]["role"] == "primary" and roles[a]["role"] == "previous" and roles[a]["requests"] == 104

    # Drift offline: longer trips are flagged (exit 3, naming the feature), the same trips are not.
    walk.run("rayline data taxi --rows 20000 --seed 7 --trip-scale 1.8 --out longer.parquet")
    walk.run("rayline data taxi --rows 20000 --seed 7 --out same.parquet")
    flagged = walk.run("rayline drift $B --input longer.parquet", code=3)
    assert "trip_distance" in flagged.stderr.strip().splitlines()[-1]
    walk.run("rayline drift $B --input same.parquet")

    assert sorted(walk.ran) == sorted(commands), set(commands) - set(walk.ran)
