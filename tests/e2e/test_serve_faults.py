"""Serving faults with real processes: a replica SIGKILLed under load, a model that cannot load,
SIGTERM with requests in flight. docs/reliability.md records the figures these hold.

The services are `rayline serve` processes; the models they serve are trained in this process
(the library's train, in the module's RAYLINE_HOME), where a process would prove nothing more."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from inprocess import new_home
from rayline.serving.ports import free_port
from service import SCRIPT, TAXI_RECORD, call, serving

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORD = TAXI_RECORD
SPEC = [str(EXAMPLES / "taxi.yaml"), "--set", "data.rows=4000", "--set", "model.num_boost_round=15"]
CLIENTS = 16


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> dict[str, str]:
    env = {**os.environ, "RAYLINE_HOME": str(new_home(tmp_path_factory.mktemp("faults-home")))}
    env.pop("RAY_ADDRESS", None)
    return env


def train(env: dict[str, str], args: list[str] = SPEC) -> str:
    """The run id of ``args`` (a spec file and its ``--set`` pairs), trained here in ``env``'s home."""
    import rayline

    assert args[1::2] == ["--set"] * (len(args) // 2), args
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYLINE_HOME", env["RAYLINE_HOME"])
        return rayline.train(rayline.load_spec(args[0], args[2::2])).run_id


@pytest.fixture(scope="module")
def run_id(env: dict[str, str]) -> str:
    return train(env)


def replica_pids(service_pid: int, app: str = "taxi") -> set[int]:
    """This service's model replicas: Ray names their processes ray::ServeReplica:<app>:<deployment>."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            if cmdline.startswith(f"ray::ServeReplica:{app}:model".encode()) and os.getsid(int(entry)) == service_pid:
                found.add(int(entry))
        except OSError:
            continue
    return found


@dataclass
class Load:
    """CLIENTS threads posting one record each, back to back, until stopped; every outcome kept."""

    url: str
    body: bytes = json.dumps([RECORD]).encode()
    outcomes: list[tuple[float, float, bool, str]] = field(default_factory=list)  # start, end, ok, what
    stop: threading.Event = field(default_factory=threading.Event)

    def _client(self) -> None:
        body = self.body
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                request = urllib.request.Request(f"{self.url}/predict", data=body, method="POST")
                with urllib.request.urlopen(request, timeout=30) as resp:
                    ok, what = resp.status == 200 and b"probability" in resp.read(), str(resp.status)
            except urllib.error.HTTPError as err:
                ok, what = False, f"HTTP {err.code}"
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                ok, what = False, type(getattr(err, "reason", err)).__name__
            self.outcomes.append((start, time.monotonic(), ok, what))

    def wait_answered(self, count: int, since: float = 0.0, timeout_s: float = 60) -> None:
        """Until ``count`` requests sent at ``since`` or later were answered (or ``timeout_s``):
        a window of so many requests, not of so many seconds, whatever the machine's pace."""
        deadline = time.monotonic() + timeout_s
        while sum(1 for o in list(self.outcomes) if o[0] >= since and o[2]) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def image_service_args(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A digit model (1 epoch on 2 classes), served by two fixed replicas."""
    import imagesets

    source = imagesets.digits(tmp_path_factory.mktemp("digits"), per_class=30, classes=[3, 8])
    spec = [str(EXAMPLES / "mnist.yaml"), "--set", f"data.source={source}", "--set", "model.epochs=1"]
    run = train(env, spec)
    return [*spec, "--model", run, "--set", "serve.autoscaling=null", "--set", "serve.num_replicas=2"]


@pytest.mark.parametrize("kind", ["taxi", "mnist"])
def test_a_replica_killed_under_load(kind: str, env: dict[str, str], request: pytest.FixtureRequest) -> None:
    """SIGKILL one of two replicas under 16 clients: <= 0.5% of requests fail, two replicas again within 30 s."""
    if kind == "taxi":
        args = [*SPEC, "--model", request.getfixturevalue("run_id"), "--set", "serve.num_replicas=2"]
        body = json.dumps([RECORD]).encode()
    else:
        import imagesets

        args = request.getfixturevalue("image_service_args")
        body = json.dumps({"image": [imagesets.digit_array(3).tolist()]}).encode()
    with serving(args, env) as (url, proc):
        deadline = time.monotonic() + 60
        while len(replica_pids(proc.pid, kind)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        before = replica_pids(proc.pid, kind)
        assert len(before) == 2, before
        with Load(url, body) as load:
            load.wait_answered(200)  # both replicas under load
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            while time.monotonic() - killed_at < 30:
                now = replica_pids(proc.pid, kind)
                if len(now) == 2 and victim not in now:
                    break
                time.sleep(0.25)
            back_after = time.monotonic() - killed_at
            load.wait_answered(300, since=killed_at + back_after)  # traffic on the replacement too
        failed = [o for o in load.outcomes if not o[2]]
        total = len(load.outcomes)
        assert back_after < 30, f"two replicas again only after {back_after:.1f} s"
        assert total > 500, total
        assert len(failed) <= 0.005 * total, f"{len(failed)} of {total} failed: {sorted({o[3] for o in failed})}"
        assert call(f"{url}/healthz")[0] == 200
        print(
            f"{kind} replica killed: {len(failed)}/{total} requests failed; two replicas again after {back_after:.1f} s"
        )


def test_sigterm_drains_the_requests_in_flight(env: dict[str, str], run_id: str) -> None:
    """SIGTERM under 16 clients: every request sent before the signal is answered, and the stop is clean."""
    args = [*SPEC, "--model", run_id, "--set", "serve.num_replicas=2"]
    with serving(args, env) as (url, proc):
        with Load(url) as load:
            load.wait_answered(200)  # requests in flight on both replicas
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=90)
        out = (proc.stdout.read() if proc.stdout else "") + (proc.stderr.read() if proc.stderr else "")
        before = [o for o in load.outcomes if o[0] < signalled]
        lost = [o for o in before if not o[2]]
        assert code == 0, out
        assert len(before) > 100 and not lost, f"{len(lost)} of {len(before)} in flight failed: {lost[:5]}"
        after = [o for o in load.outcomes if o[0] >= signalled]
        print(f"SIGTERM: {len(before)} requests sent before the signal all answered; {len(after)} sent after")
        # a clean stop: nothing from Ray's processes on the terminal
        for noise in ("(raylet)", "Traceback", "ERROR", "graceful_shutdown"):
            assert noise not in out, out


def test_a_model_that_cannot_load_fails_fast_with_the_reason(env: dict[str, str]) -> None:
    broken = train(env)
    home = Path(env["RAYLINE_HOME"])
    files = [p for p in home.rglob("*") if p.is_file() and broken in str(p) and "checkpoint" in str(p)]
    models = [p for p in files if p.name != "meta.json"]
    assert models, files
    for path in models:
        path.write_bytes(b"not a model")
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", *SPEC, "--model", broken, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: list[tuple[int, Any]] = []  # what /healthz answered while it was starting
    while proc.poll() is None and time.monotonic() - started < 300:
        with contextlib.suppress(urllib.error.URLError, ConnectionError):
            seen.append(call(f"http://127.0.0.1:{port}/healthz"))
        time.sleep(0.2)
    stderr = proc.stderr.read() if proc.stderr else ""
    done = subprocess.CompletedProcess(proc.args, proc.wait(timeout=60), "", stderr)
    took = time.monotonic() - started
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert any("could not be served" in line for line in lines), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert took < 150, f"{took:.0f} s to report a model that cannot load"
    print(f"unloadable model: exit {done.returncode} after {took:.0f} s: {lines[-1]}")
    statuses = {status for status, _ in seen}
    print(f"/healthz while starting: {sorted(statuses)}; {seen[-1] if seen else None}")
    assert 200 not in statuses
    assert any(status == 503 and isinstance(body, dict) and body.get("error") for status, body in seen), seen[-3:]
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(f"http://127.0.0.1:{port}/healthz")  # nothing left listening


def test_api_key_from_a_file_and_a_missing_one(env: dict[str, str], run_id: str, tmp_path: Path) -> None:
    """The key from a mounted-secret file guards /predict and /docs, /healthz stays open; a key
    variable that is not set stops the service before it starts, in one line."""
    secret = tmp_path / "key"
    secret.write_text("s3cret-key\n")
    grpc_port = free_port()
    args = [*SPEC, "--model", run_id, "--set", f"serve.api_key_file={secret}", "--set", "serve.num_replicas=1",
            "--set", f"serve.grpc_port={grpc_port}"]  # fmt: skip
    with serving(args, env) as (url, _):
        body = json.dumps([RECORD]).encode()
        assert call(f"{url}/predict", body)[0] == 401
        assert call(f"{url}/predict", body, {"Authorization": "Bearer wrong"})[0] == 401
        status, answer = call(f"{url}/predict", body, {"Authorization": "Bearer s3cret-key"})
        assert status == 200 and len(answer["predictions"]) == 1
        assert call(f"{url}/docs")[0] == 401 and call(f"{url}/openapi.json")[0] == 401
        assert call(f"{url}/healthz")[0] == 200 and call(f"{url}/v2/health/ready")[0] == 200
        # The Open Inference Protocol over gRPC needs the key as /predict does; its probes do not.
        import grpc
        import numpy as np
        import tritonclient.grpc as tgrpc
        from tritonclient.utils import InferenceServerException

        client = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_live() and client.is_server_ready()
        inputs = []
        for name, value in RECORD.items():
            array = np.array([value], dtype=np.int64 if isinstance(value, int) else np.float64)
            inputs.append(tgrpc.InferInput(name, [1], "INT64" if isinstance(value, int) else "FP64"))
            inputs[-1].set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("taxi", inputs)
        assert refused.value.status() == str(grpc.StatusCode.UNAUTHENTICATED), refused.value
        answered = client.infer("taxi", inputs, headers={"authorization": "Bearer s3cret-key"})
        assert answered.as_numpy("label").shape == (1,)
    unset = {k: v for k, v in env.items() if k != "RAYLINE_TEST_NO_SUCH_KEY"}
    done = subprocess.run(
        [str(SCRIPT), "serve", *SPEC, "--model", run_id, "--set", "serve.api_key_env=RAYLINE_TEST_NO_SUCH_KEY"],
        env=unset,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "RAYLINE_TEST_NO_SUCH_KEY" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_scales_from_zero_and_back(env: dict[str, str], run_id: str) -> None:
    """``serve.autoscaling.min_replicas: 0``: an idle service holds no model replica; the first
    request wakes one and is answered; idle again, the replica goes (docs/benchmarks.md: cold start)."""
    auto = {"min_replicas": 0, "max_replicas": 1, "downscale_delay_s": 2, "look_back_period_s": 2}
    sets = ["--set", "serve.num_replicas=null"]
    sets += [a for k, v in auto.items() for a in ("--set", f"serve.autoscaling.{k}={v}")]
    with serving([*SPEC, "--model", run_id, *sets], env, idle=True) as (url, proc):
        time.sleep(3)
        assert replica_pids(proc.pid) == set()
        started = time.monotonic()
        status, body = call(f"{url}/predict", json.dumps([RECORD]).encode())
        cold_s = time.monotonic() - started
        assert status == 200 and body["model"] == run_id and len(body["predictions"]) == 1, body
        assert len(replica_pids(proc.pid)) == 1
        started = time.monotonic()
        assert call(f"{url}/predict", json.dumps([RECORD]).encode())[0] == 200
        warm_s = time.monotonic() - started
        status, page = call(f"{url}/")
        assert status == 200 and b"waking the model" in page
        deadline = time.monotonic() + 90
        while replica_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(1)
        assert replica_pids(proc.pid) == set(), "the replica stayed after the service went idle"
        print(f"\nscale from zero: first request {cold_s:.2f} s, the next {warm_s * 1000:.0f} ms")
