"""`rayline serve` on a trained table model: a real subprocess, real HTTP, real Ray Serve.

The models it serves are trained in this process (the library's train, in the module's
RAYLINE_HOME): a `rayline train` process would prove nothing more here."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import oip
from inprocess import new_home
from rayline.serving.ports import free_port
from service import TAXI_RECORD, call, fuzz, serving

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORD = TAXI_RECORD
SETS = ["--set", "data.rows=4000", "--set", "model.num_boost_round=15", "--set", "serve.num_replicas=2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> dict[str, str]:
    home = new_home(tmp_path_factory.mktemp("serve-home"))
    env = {**os.environ, "RAYLINE_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def service(env: dict[str, str], grpc_port: int) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    train(env)
    args = [str(EXAMPLES / "taxi.yaml"), "--model", "best", *SETS, "--set", f"serve.grpc_port={grpc_port}"]
    with serving(args, env) as (url, proc):
        yield url, proc


def train(env: dict[str, str], *sets: str) -> str:
    """A taxi run of the served spec (its ``--set`` values and ``sets``), trained here in ``env``'s home; its run id."""
    import rayline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYLINE_HOME", env["RAYLINE_HOME"])
        return rayline.train(rayline.load_spec(str(EXAMPLES / "taxi.yaml"), [*SETS[1::2], *sets])).run_id


def train_another(env: dict[str, str], *, rounds: int) -> str:
    """Another taxi run of the served spec (``rounds`` boosting rounds); its run id."""
    return train(env, f"model.num_boost_round={rounds}")


def test_predict_good_records(service: tuple[str, Any]) -> None:
    url, _ = service
    varied = [
        {**RECORD, "fare_amount": fare, "trip_distance": miles, "hour": hour}
        for fare, miles, hour in [(5.0, 0.5, 3), (12.0, 2.5, 18), (80.0, 20.0, 8), (30.0, 1.0, 23)]
    ]
    status, body = call(f"{url}/predict", json.dumps(varied).encode())
    assert status == 200
    assert len(body["predictions"]) == 4
    for pred in body["predictions"]:
        assert 0.0 <= pred["probability"] <= 1.0 and isinstance(pred["label"], bool)
    assert len({pred["probability"] for pred in body["predictions"]}) > 1  # the model looks at the features


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (b'[{"trip_dist', 400, "not valid JSON"),
        (json.dumps([{"trip_distance": "far"}]).encode(), 422, "passenger_count"),
        (json.dumps([{**RECORD, "trip_distance": "far"}]).encode(), 422, "0.trip_distance"),
        (json.dumps([{**RECORD, "tip": 3}]).encode(), 422, "0.tip"),
        (json.dumps([]).encode(), 422, "at least 1"),
        (json.dumps({"records": [RECORD]}).encode(), 422, "valid array"),
    ],
)
def test_bad_input_is_4xx_json(service: tuple[str, Any], payload: bytes, status: int, needle: str) -> None:
    url, _ = service
    got, body = call(f"{url}/predict", payload)
    assert got == status
    assert needle in json.dumps(body)
    assert call(f"{url}/healthz")[0] == 200  # still healthy afterwards


def test_oversized_body_413(service: tuple[str, Any]) -> None:
    url, _ = service
    status, body = call(f"{url}/predict", b"[" + b" " * (9 * 1024 * 1024) + b"]")
    assert status == 413 and "limit" in body["error"]


def test_docs_show_the_real_fields(service: tuple[str, Any]) -> None:
    url, _ = service
    status, doc = call(f"{url}/openapi.json")
    assert status == 200
    record = doc["components"]["schemas"]["Record"]
    assert set(record["required"]) == set(RECORD)
    # xgboost takes missing values: a feature is a number or null
    types = {t["type"] for t in record["properties"]["trip_distance"]["anyOf"]}
    assert types == {"number", "null"}
    assert call(f"{url}/docs")[0] == 200


def test_fuzzed_against_its_own_openapi_document(service: tuple[str, Any], tmp_path: Path) -> None:
    """schemathesis (all checks): no 5xx, every answer as documented, schema-valid bodies accepted."""
    url, _ = service
    fuzz(url, tmp_path)
    assert call(f"{url}/healthz")[0] == 200


def test_explain_adds_up_to_what_predict_answered(service: tuple[str, Any], env: dict[str, str]) -> None:
    """POST /explain: per-feature TreeSHAP contributions that add up to the margin, the margin
    being the log-odds of /predict's probability; errors as /predict's; a run named by the
    multiplexing header is the run that explains."""
    url, _ = service
    trips = [
        {**RECORD, "fare_amount": fare, "trip_distance": miles, "hour": hour}
        for fare, miles, hour in [(5.0, 0.5, 3), (80.0, 20.0, 8), (30.0, 1.0, 23)]
    ]

    def check(headers: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
        status, predicted = call(f"{url}/predict", json.dumps(trips).encode(), headers)
        assert status == 200, predicted
        status, body = call(f"{url}/explain", json.dumps(trips).encode(), headers)
        assert status == 200, body
        assert body["model"] == predicted["model"] and len(body["explanations"]) == 3
        for explanation, prediction in zip(body["explanations"], predicted["predictions"], strict=True):
            assert set(explanation["contributions"]) == set(RECORD)
            total = explanation["bias"] + sum(explanation["contributions"].values())
            assert total == pytest.approx(explanation["margin"], abs=1e-4)
            p = prediction["probability"]
            assert explanation["margin"] == pytest.approx(np.log(p / (1 - p)), abs=1e-4)
            assert explanation["label"] == prediction["label"]
        return body["model"], body["explanations"]

    served, default = check({})
    assert call(f"{url}/healthz")[1]["model_run_id"] == served
    # a bad body is /predict's 4xx JSON
    status, body = call(f"{url}/explain", json.dumps([{**RECORD, "trip_distance": "far"}]).encode())
    assert status == 422 and "0.trip_distance" in body["error"]
    status, body = call(f"{url}/explain", b"[{")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = call(f"{url}/explain", json.dumps(trips).encode(), {"serve_multiplexed_model_id": "0" * 32})
    assert status == 404 and "error" in body
    # another run of the spec, named by the header, explains itself: other trees, other numbers
    # (one tree: the served model's early stopping keeps a few)
    other = train_another(env, rounds=1)
    named, explained = check({"serve_multiplexed_model_id": other})
    assert named == other != served
    assert [e["margin"] for e in explained] != pytest.approx([e["margin"] for e in default], abs=1e-3)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("Infinity", "0.trip_distance: must be a finite number"),
        ("1e400", "must be a finite number"),
        ("true", "0.trip_distance: Input should be a valid number"),
        ('"2.5"', "Input should be a valid number"),
    ],
)
def test_number_policy(service: tuple[str, Any], value: str, needle: str) -> None:
    url, _ = service
    raw = json.dumps([RECORD]).replace('"trip_distance": 2.5', f'"trip_distance": {value}')
    status, body = call(f"{url}/predict", raw.encode())
    assert status == 422 and needle in body["error"], body


def test_null_is_a_missing_value_for_trees(service: tuple[str, Any]) -> None:
    url, _ = service
    status, body = call(f"{url}/predict", json.dumps([{**RECORD, "trip_distance": None}]).encode())
    assert status == 200 and 0.0 <= body["predictions"][0]["probability"] <= 1.0


def test_several_replicas_answer(service: tuple[str, Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url, _ = service
    # HAProxy balances by least connections: concurrent requests spread over the replicas. The
    # second replica may still be joining the balancer right after start-up: allow it 60 s.
    replicas: set[str] = set()
    deadline = time.monotonic() + 60
    while len(replicas) < 2 and time.monotonic() < deadline:
        if replicas:  # a wave reached only one: give the other a moment to join
            time.sleep(1)
        with ThreadPoolExecutor(16) as pool:
            replicas |= set(pool.map(lambda _: call(f"{url}/healthz")[1]["replica"], range(100)))
    assert len(replicas) == 2


def test_listens_on_loopback_only(service: tuple[str, Any]) -> None:
    url, _ = service
    port = int(url.rsplit(":", 1)[1])
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=False).stdout
    if not out:
        pytest.skip("ss is not available")
    listeners = [line.split()[3] for line in out.splitlines() if line.split()[3].endswith(f":{port}")]
    assert listeners and all(addr.startswith("127.0.0.1:") for addr in listeners)
    # HAProxy's stats and Prometheus listeners (every interface in Ray's template) are unix sockets.
    owned = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    haproxy = [line.split()[3] for line in owned.splitlines() if '"haproxy"' in line]
    assert haproxy and all(addr.startswith("127.0.0.1:") for addr in haproxy), haproxy


def haproxy_backup_ports() -> dict[str, int]:
    """Config file -> port of its backup server, for every HAProxy running on this machine."""
    found: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if not args[0].endswith("haproxy") or "-f" not in args:
            continue
        config = args[args.index("-f") + 1]
        for line in Path(config).read_text().splitlines():
            if line.strip().startswith("server ") and line.rstrip().endswith(" backup"):
                found[config] = int(line.split()[2].rsplit(":", 1)[1])
    return found


def test_two_services_on_one_machine(service: tuple[str, Any], env: dict[str, str]) -> None:
    """A second service answers with its own model from its first healthy answer on.

    Serve's fallback proxy (HAProxy's backup server) defaults to port 8500 for every service: the
    second one's HAProxy used to fall back to the first service while its own replica started.
    """
    first_url, _ = service
    first = call(f"{first_url}/healthz")[1]["model_run_id"]
    second = train_another(env, rounds=5)
    args = [str(EXAMPLES / "taxi.yaml"), "--model", second, *SETS, "--set", "serve.num_replicas=1"]
    with serving(args, env, port=0) as (url, _):  # port 0: the service picks a free one
        assert 20000 <= int(url.rsplit(":", 1)[1]) < 30000, url
        # Each HAProxy's backup server is its own service's proxy, not one port shared by all.
        backups = haproxy_backup_ports()
        assert len(backups) >= 2 and len(set(backups.values())) == len(backups), backups
        assert call(f"{url}/healthz")[1]["model_run_id"] == second
        status, body = call(f"{url}/predict", json.dumps([RECORD]).encode())
        assert status == 200 and body["model"] == second
        assert call(f"{first_url}/healthz")[1]["model_run_id"] == first


# ------------------------------------------------------------- the Open Inference Protocol
TRIPS = [(5.0, 0.5, 3), (12.0, 2.5, 18), (80.0, 20.0, 8), (30.0, 1.0, 23)]


def trip_columns() -> dict[str, np.ndarray]:
    """TRIPS as one column per feature, each in the datatype the model's metadata declares."""
    rows = [{**RECORD, "fare_amount": fare, "trip_distance": miles, "hour": hour} for fare, miles, hour in TRIPS]
    ints = {"trip_duration", "hour", "day_of_week"}
    return {k: np.array([r[k] for r in rows], dtype=np.int64 if k in ints else np.float64) for k in RECORD}


def test_open_inference_protocol_answers_as_predict(service: tuple[str, Any], grpc_port: int) -> None:
    """tritonclient over REST (binary and JSON tensors) and gRPC: health, metadata, and the same
    predictions as /predict for the same trips."""
    url, _ = service
    columns = trip_columns()
    rows = [
        {k: v.item() for k, v in zip(columns, values, strict=True)} for values in zip(*columns.values(), strict=True)
    ]
    status, body = call(f"{url}/predict", json.dumps(rows).encode())
    assert status == 200
    expected = body["predictions"]
    http, grpc = oip.clients(url, f"127.0.0.1:{grpc_port}")
    for client in (http, grpc):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("taxi")
    meta = http.get_model_metadata("taxi")
    assert meta["versions"] == [body["model"]] and meta["platform"] == "rayline_xgboost"
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {
        k: "INT64" if v.dtype == np.int64 else "FP64" for k, v in columns.items()
    }
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("label", "BOOL", [-1]),
        ("probability", "FP64", [-1]),
    ]
    grpc_meta = grpc.get_model_metadata("taxi", as_json=True)
    assert [t["name"] for t in grpc_meta["inputs"]] == [t["name"] for t in meta["inputs"]]
    answers = [
        oip.infer(http, "taxi", columns)[0],
        oip.infer(http, "taxi", columns, binary=False)[0],
        oip.infer(grpc, "taxi", columns)[0],
        # FP32 columns and an [n, 1] shape are the same inputs
        oip.infer(
            grpc,
            "taxi",
            {k: (v.astype(np.float32) if v.dtype == np.float64 else v)[:, None] for k, v in columns.items()},
        )[0],
    ]
    for outputs in answers:
        assert outputs["label"].tolist() == [p["label"] for p in expected]
        assert outputs["probability"] == pytest.approx([p["probability"] for p in expected], abs=1e-6)
    version = oip.infer(http, "taxi", columns, version=body["model"][:8])[1]
    assert version["model_name"] == "taxi" and version["model_version"] == body["model"]


def test_open_inference_protocol_bad_tensors_are_refused(service: tuple[str, Any], grpc_port: int) -> None:
    url, _ = service
    columns = trip_columns()
    http, grpc = oip.clients(url, f"127.0.0.1:{grpc_port}")
    text = {**columns, "fare_amount": np.array([b"a", b"b", b"c", b"d"], dtype=np.object_)}
    assert "400" in oip.refused(http, "taxi", text) and "'fare_amount': datatype BYTES" in oip.refused(
        http, "taxi", text
    )
    assert "INVALID_ARGUMENT" in oip.refused(grpc, "taxi", text)
    wide = {**columns, "hour": np.stack([columns["hour"], columns["hour"]], axis=1)}
    assert "'hour': shape 4x2, expected n" in oip.refused(grpc, "taxi", wide)
    extra = {**columns, "tip": columns["hour"]}
    assert "unknown input 'tip'" in oip.refused(http, "taxi", extra)
    short = {k: v for k, v in columns.items() if k != "hour"}
    assert "input 'hour' is missing" in oip.refused(grpc, "taxi", short)
    fractional = {**columns, "hour": np.array([1.5, 2, 3, 4])}
    assert "'hour': datatype FP64, expected INT64" in oip.refused(http, "taxi", fractional)
    infinite = {**columns, "fare_amount": np.array([np.inf, 1, 2, 3])}
    assert "'fare_amount', row 0" in oip.refused(http, "taxi", infinite)
    assert "404" in oip.refused(http, "cab", columns) and "NOT_FOUND" in oip.refused(grpc, "cab", columns)
    assert "NOT_FOUND" in oip.refused(grpc, "taxi", columns, version="0123456789ab")
    # errors are the protocol's JSON bodies
    status, body = call(f"{url}/v2/models/taxi/infer", b'{"inputs": [{"name": "hour", "datatype": "INT64"}]}')
    assert status == 400 and "shape" in body["error"]
    status, body = call(f"{url}/v2/models/cab")
    assert status == 404 and "'taxi'" in body["error"]
    # ...and the service is as healthy as before
    assert grpc.is_server_ready() and oip.infer(grpc, "taxi", columns)[0]["label"].shape == (4,)


# ------------------------------------------------------------------------ NDJSON streams
def stream(url: str, lines: Iterator[bytes]) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    """POST the lines (chunked, as they are generated) to /predict/stream; read the answer as it comes."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=120)
    conn.request("POST", "/predict/stream", body=lines, headers={"Content-Type": "application/x-ndjson"})
    resp = conn.getresponse()
    out = [json.loads(line) for line in resp.read().splitlines()]
    return resp.status, dict(resp.getheaders()), out


def trips(n: int) -> Iterator[bytes]:
    for start in range(0, n, 5000):
        block = [
            {**RECORD, "trip_distance": (i % 400) / 10, "hour": i % 24} for i in range(start, min(n, start + 5000))
        ]
        yield b"".join(json.dumps(r).encode() + b"\n" for r in block)


def test_a_stream_past_the_body_limit_is_predicted_line_by_line(service: tuple[str, Any]) -> None:
    url, _ = service
    n = 80_000  # ~9.8 MB of NDJSON: over serve.max_request_bytes (8 MiB), which bounds a line here
    status, headers, out = stream(url, trips(n))
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    assert len(out) == n and all("probability" in p for p in out)
    first = [json.loads(line) for block in trips(6) for line in block.splitlines()]
    _, body = call(f"{url}/predict", json.dumps(first).encode())
    assert out[:6] == body["predictions"] and headers["rayline-model"] == body["model"]


def test_a_bad_line_in_a_stream_is_named(service: tuple[str, Any]) -> None:
    url, _ = service
    good = json.dumps(RECORD).encode() + b"\n"
    status, _, out = stream(url, iter([good * 3, json.dumps({**RECORD, "trip_distance": "far"}).encode()]))
    assert status == 422 and "line 4" in out[0]["error"] and "trip_distance" in out[0]["error"]
    status, _, out = stream(url, iter([good, b"[1, 2]\n"]))  # an array where a record goes
    assert status == 422 and out[0]["error"] == "line 2: Input should be an object", out
    # past the first chunk the status is sent: the stream ends with an error line naming the line
    late = 5000 + 3
    status, _, out = stream(url, iter([*trips(5000), good * 2, b"{not json\n", good]))
    assert status == 200 and out[-1] == {"error": f"line {late}: not valid JSON"}
    assert len(out) - 1 == 4096  # the two chunks of 2048 lines before the one with the bad line
    assert call(f"{url}/healthz")[0] == 200


def haproxy_configs_for(port: int) -> list[Path]:
    """Config files of the HAProxy processes that serve ``port``."""
    configs = [Path(c) for c in haproxy_backup_ports()]
    return [c for c in configs if f"bind 127.0.0.1:{port}" in c.read_text()]


def test_sigterm_stops_cleanly(service: tuple[str, subprocess.Popen[str]]) -> None:
    """SIGTERM (docker stop, kill) is a clean stop like Ctrl-C: exit 0, HAProxy gone, its folder removed."""
    url, proc = service
    configs = haproxy_configs_for(int(url.rsplit(":", 1)[1]))
    assert configs
    # every file HAProxy uses is in the service's own folder (removed at stop), none in Ray's /tmp default
    assert all("/tmp/haproxy-serve" not in c.read_text() for c in configs)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0, proc.stderr.read() if proc.stderr else ""
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(f"{url}/healthz")
    assert not set(configs) & set(map(Path, haproxy_backup_ports()))
    assert not any(c.exists() for c in configs)
