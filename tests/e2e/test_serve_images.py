"""`rayline serve` on trained image models: the fused deployment, batching, multiplexing, over HTTP.

Two runs of examples/mnist.yaml (pointed at a small digit folder) are trained in this process
(the library's train, in the module's RAYLINE_HOME); the service, a `rayline serve` process,
starts with the first and may be asked for the second per request.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import imagesets
import oip
from inprocess import new_home
from rayline.serving.ports import free_port
from service import call, fuzz, serving

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLASSES = [3, 5, 8]


def digit(label: int, n: int = 0) -> np.ndarray:
    return imagesets.digit_array(label, n)


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(f"{url}/predict", raw, headers)


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, grpc_port: int, empty_store: Path
) -> Iterator[tuple[str, list[str], subprocess.Popen[str]]]:
    import rayline

    root = tmp_path_factory.mktemp("serve-images")
    source = imagesets.digits(root / "digits", per_class=30, classes=CLASSES)
    env = {**os.environ, "RAYLINE_HOME": str(new_home(root / "home"))}
    env.pop("RAY_ADDRESS", None)
    sets = [f"data.source={source}", "model.epochs=1"]
    spec = [str(EXAMPLES / "mnist.yaml"), *(arg for value in sets for arg in ("--set", value))]
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYLINE_HOME", env["RAYLINE_HOME"])
        for lr in ("0.002", "0.0005"):
            runs.append(rayline.train(rayline.load_spec(spec[0], [*sets, f"model.lr={lr}"])).run_id)
    # One replica: /healthz's batching counts are per replica.
    one = ["--set", "serve.autoscaling.initial_replicas=1", "--set", f"serve.grpc_port={grpc_port}"]
    with serving([*spec, *one, "--model", runs[0]], env) as (url, proc):
        yield url, runs, proc


def test_three_arrays(service: tuple[str, list[str], Any]) -> None:
    url, runs, _ = service
    images = [digit(label) for label in CLASSES]
    status, body = post(url, {"image": [img.tolist() for img in images]})
    assert status == 200, body
    assert body["model"] == runs[0]
    assert len(body["predictions"]) == 3
    for pred in body["predictions"]:
        assert set(pred["probabilities"]) == {str(c) for c in CLASSES}
        assert sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert pred["label"] == max(pred["probabilities"], key=pred["probabilities"].get)
        assert pred["probability"] == pytest.approx(pred["probabilities"][pred["label"]])


def test_base64_png_matches_the_array(service: tuple[str, list[str], Any]) -> None:
    url, _, _ = service
    image = digit(5, 1)
    _, by_array = post(url, {"image": [image.tolist()]})
    status, by_png = post(url, {"image": [png_base64(image), "data:image/png;base64," + png_base64(image)]})
    assert status == 200, by_png
    for pred in by_png["predictions"]:
        for label, p in by_array["predictions"][0]["probabilities"].items():
            assert pred["probabilities"][label] == pytest.approx(p, abs=1e-5)


GOOD = digit(3).tolist()


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (b'{"image": [[1, 2', 400, "not valid JSON"),
        ({"image": "x"}, 422, "image: Input should be a valid array"),
        ({"image": []}, 422, "at least 1"),
        ({"image": [GOOD, [[0] * 27] * 28]}, 422, "image.1.pixels.0: List should have at least 28 items"),
        ({"image": [[[0] * 28] * 28 + [[0] * 28]]}, 422, "image.0.pixels: List should have at most 28 items"),
        ({"image": [[[300] * 28] * 28]}, 422, "image.0.pixels.0.0: Input should be less than or equal to 255"),
        ({"image": [[[-1] * 28] * 28]}, 422, "image.0.pixels.0.0: Input should be greater than or equal to 0"),
        ({"image": [[[True] * 28] * 28]}, 422, "image.0.pixels.0.0: Input should be a valid number"),
        ({"image": [[["a"] * 28] * 28]}, 422, "image.0.pixels.0.0: Input should be a valid number"),
        ({"image": [[[0] * 28] * 27 + [[0] * 5]]}, 422, "image.0.pixels.27: List should have at least 28"),  # ragged
        ({"image": [GOOD], "model": "../../etc"}, 422, "model: String should match pattern"),
        ({"image": ["not base64!"]}, 422, "base64"),
        ({"image": [base64.b64encode(b"not a png").decode()]}, 422, "not a decodable image"),
        ({"image": [GOOD], "colour": 1}, 422, "colour"),
    ],
)
def test_bad_payloads_are_4xx_json(service: tuple[str, list[str], Any], payload: Any, status: int, needle: str) -> None:
    url, _, _ = service
    got, body = post(url, payload)
    assert got == status, body
    assert needle in body["error"]
    assert call(f"{url}/healthz")[0] == 200


# JSON Schema can say "a string" but not "a decodable PNG": a schema-valid random string is a 422.
# Every other answer is held to the document (arrays of the model's exact shape are accepted).
BASE64_IS_NOT_SCHEMA = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "422"]
"""


def test_fuzzed_against_its_own_openapi_document(service: tuple[str, list[str], Any], tmp_path: Path) -> None:
    url, _, _ = service
    fuzz(url, tmp_path, config=BASE64_IS_NOT_SCHEMA, examples=60)
    assert call(f"{url}/healthz")[0] == 200


def _png_claiming(width: int, height: int) -> str:
    """A PNG of a few dozen bytes whose header claims width x height pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


def test_hostile_images_are_4xx_and_harmless(service: tuple[str, list[str], Any]) -> None:
    url, _, _ = service
    status, body = post(url, {"image": [_png_claiming(100_000, 100_000)]})
    assert status == 422 and "image.0" in body["error"], body
    status, body = post(url, {"image": [_png_claiming(5_000, 5_000)]})
    assert status == 422 and "at most" in body["error"], body
    status, body = post(url, {"image": ["A" * (10 * 1024 * 1024)]})
    assert status == 413 and "limit" in body["error"], body
    assert call(f"{url}/healthz")[0] == 200
    status, body = post(url, {"image": [GOOD]})
    assert status == 200 and len(body["predictions"]) == 1


def test_multiplexing_by_header_and_by_field(service: tuple[str, list[str], Any]) -> None:
    url, runs, _ = service
    body = {"image": [digit(8).tolist()]}
    _, first = post(url, body)
    status, by_header = post(url, body, {"serve_multiplexed_model_id": runs[1]})
    assert status == 200 and by_header["model"] == runs[1]
    status, by_field = post(url, {**body, "model": runs[1][:8]})  # a unique prefix is enough
    assert status == 200 and by_field["model"] == runs[1]
    assert by_field["predictions"] == by_header["predictions"]
    assert by_header["predictions"][0]["probabilities"] != first["predictions"][0]["probabilities"]
    _, again = post(url, body, {"serve_multiplexed_model_id": runs[0]})
    assert again["model"] == runs[0] and again["predictions"] == first["predictions"]


def test_unknown_model_is_404(service: tuple[str, list[str], Any]) -> None:
    url, _, _ = service
    status, body = post(url, {"image": [GOOD], "model": "0123456789abcdef"})
    assert status == 404 and "0123456789abcdef" in body["error"]
    status, body = post(url, {"image": [GOOD]}, {"serve_multiplexed_model_id": "nosuchrun"})
    assert status == 404 and "nosuchrun" in body["error"]


def test_concurrent_requests_are_batched(service: tuple[str, list[str], Any]) -> None:
    url, runs, _ = service
    before = call(f"{url}/healthz")[1]["batching"]
    bodies = [{"image": [digit(CLASSES[i % 3], i).tolist()]} for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: post(url, b), bodies))
    assert all(status == 200 and body["model"] == runs[0] for status, body in answers)
    after = call(f"{url}/healthz")[1]["batching"]
    assert after["requests"] - before["requests"] == 64
    # 64 requests from 16 threads arrived in fewer batches: some were served together
    assert after["batches"] - before["batches"] < 64 and after["largest"] > 1


def test_open_inference_protocol_answers_as_predict(service: tuple[str, list[str], Any], grpc_port: int) -> None:
    """tritonclient over REST and gRPC: metadata from the image layout, the same predictions as
    /predict, a version (a run id prefix) as the multiplexing header does, bad tensors refused."""
    url, runs, _ = service
    images = np.stack([digit(label, 2) for label in CLASSES])  # uint8 [3, 28, 28]
    http, grpc = oip.clients(url, f"127.0.0.1:{grpc_port}")
    meta = grpc.get_model_metadata("mnist", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("image", "UINT8", ["-1", "1", "28", "28"])
    ]
    assert [t["name"] for t in meta["outputs"]] == ["label", "probability", "probabilities"]
    names = [str(c) for c in CLASSES]
    for run, header in ((runs[0], {}), (runs[1], {"serve_multiplexed_model_id": runs[1]})):
        _, body = post(url, {"image": images.tolist()}, header)
        expected = body["predictions"]
        version = "" if run == runs[0] else run[:8]
        for client, arrays in (
            (http, {"image": images[:, None]}),  # [n, 1, 28, 28]
            (grpc, {"image": images}),  # [n, 28, 28]: a grayscale image's channel may be left out
            (grpc, {"image": images.astype(np.float32)}),
        ):
            outputs, answer = oip.infer(client, "mnist", arrays, version=version)
            assert answer["model_version"] == run
            assert [v.decode() for v in outputs["label"]] == [p["label"] for p in expected]
            assert outputs["probability"] == pytest.approx([p["probability"] for p in expected], abs=1e-5)
            table = [[p["probabilities"][c] for c in names] for p in expected]
            assert outputs["probabilities"] == pytest.approx(np.array(table), abs=1e-5)
    bright = images.astype(np.float32) * 2
    assert "pixel values must be numbers from 0 to 255" in oip.refused(http, "mnist", {"image": bright})
    assert "shape 3x27x28, expected nx1x28x28" in oip.refused(grpc, "mnist", {"image": images[:, 1:]})
    assert grpc.is_model_ready("mnist") and not http.is_model_ready("mnist", "nosuchrun")


def test_images_stream_one_per_line(service: tuple[str, list[str], Any]) -> None:
    url, runs, _ = service
    images = [digit(label, 3) for label in CLASSES]
    lines = [json.dumps(img.tolist()) for img in images[:2]] + [json.dumps(png_base64(images[2]))]
    status, body = call(f"{url}/predict/stream", "\n".join(lines).encode(), {"serve_multiplexed_model_id": runs[1]})
    assert status == 200
    streamed = [json.loads(line) for line in body.splitlines()]
    _, expected = post(
        url,
        {"image": [*[img.tolist() for img in images[:2]], png_base64(images[2])]},
        {"serve_multiplexed_model_id": runs[1]},
    )
    assert streamed == expected["predictions"]


def test_docs(service: tuple[str, list[str], Any]) -> None:
    url, _, _ = service
    status, doc = call(f"{url}/openapi.json")
    assert status == 200
    schema = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["title"] == "ImageRequest" and schema["required"] == ["image"]
    assert set(schema["properties"]) == {"image", "model"}
    assert call(f"{url}/docs")[0] == 200
    health = call(f"{url}/healthz")[1]
    assert health["classes"] == [str(c) for c in CLASSES] and health["images"] == "28x28 grayscale"


def test_ctrl_c_stops_cleanly(service: tuple[str, list[str], subprocess.Popen[str]]) -> None:
    url, _, proc = service
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(f"{url}/healthz")
