"""Data on S3: tables and image folders read from ``s3://`` URIs, through the CLI.

A local S3 server (moto) holds a public bucket; ``AWS_ENDPOINT_URL`` points Arrow (and so Ray
Data) at it. The URIs use the ``s3://anonymous@bucket/key`` form of the course's taxi file
(unsigned requests, no credentials), so the real URI is read the same way where there is a network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_cli import assert_one_line_error
from test_cli import rayline_process as rayline

import imagesets
import tablesets
from rayline.serving.ports import free_port

BUCKET = "rayline-test"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A public bucket with a table (as a parquet folder and a CSV) and an image folder; yields the env."""
    pytest.importorskip("moto")
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": "us-east-1",
    }
    s3: Any = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
    )
    s3.create_bucket(Bucket=BUCKET, ACL="public-read")

    def put(key: str, body: bytes) -> None:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body, ACL="public-read")

    local = tmp_path_factory.mktemp("s3-upload")
    put("tables/clicks/part-0.parquet", tablesets.make_table("binary", local).read_bytes())
    put("tables/clicks.csv", tablesets.make_table("binary", local, fmt="csv").read_bytes())
    root = imagesets.colours(local / "colours", per_class=12)
    for png in sorted(root.rglob("*.png")):
        put(f"images/colours/{png.relative_to(root)}", png.read_bytes())
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture
def s3_env(bucket: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in bucket.items():
        monkeypatch.setenv(name, value)


def uri(key: str) -> str:
    return f"s3://anonymous@{BUCKET}/{key}"


def train(folder: Path, name: str, body: str) -> tuple[Path, str]:
    """Write ``name.yaml`` (``name:`` + ``body``), train it with the CLI; the spec and the CLI's output."""
    spec = folder / f"{name}.yaml"
    spec.write_text(f"name: {name}\n{body}")
    return spec, rayline("train", str(spec)).stdout


def test_table_on_s3_trains_in_process_and_predicts(tmp_path: Path, s3_env: None) -> None:
    from rayline.registry import open_registry

    spec, trained = train(
        tmp_path,
        "clicks",
        f"data: {{source: '{uri('tables/clicks')}', label: clicked, categorical: [color]}}\n"
        "model: {family: xgboost, num_boost_round: 20, params: {max_depth: 3}}\n",
    )
    # A small remote parquet table is sized from its footers and read here, not on a Train run.
    assert "(local," in trained, trained
    (run,) = open_registry().list_runs("clicks", kind="train")
    assert run.metrics["valid_accuracy"] > 0.85
    assert run.tags["rayline.data.source"] == uri("tables/clicks") and run.tags["rayline.data.rows"] == "600"

    out = tmp_path / "clicks.parquet"
    predicted = rayline("predict", str(spec), "--model", "latest", "--input", uri("tables/clicks"), "--out", str(out))
    assert "in process" in predicted.stdout
    frame = pd.read_parquet(out)
    assert len(frame) == 600 and {"x1", "color", "probability", "predicted_label"} <= set(frame.columns)
    assert (frame["predicted_label"] == frame["clicked"]).mean() > 0.85

    # A remote CSV is streamed part by part in process too (auto: a table of any size on the embedded Ray).
    out = tmp_path / "from-csv.parquet"
    pooled = rayline("predict", str(spec), "--model", "latest", "--input", uri("tables/clicks.csv"), "--out", str(out))
    assert "in process" in pooled.stdout
    from_csv = pd.read_parquet(out).sort_values("x1")["probability"].round(6).tolist()
    assert from_csv == frame.sort_values("x1")["probability"].round(6).tolist()  # same rows, same model


def test_image_folder_on_s3_trains_and_predicts(tmp_path: Path, s3_env: None) -> None:
    spec, trained = train(
        tmp_path,
        "colours",
        f"data: {{source: '{uri('images/colours')}', image: {{mode: RGB, size: [24, 32]}}}}\n"
        "model: {family: resnet18, epochs: 1, batch_size: 16}\nmetric: valid_accuracy\nmode: max\n",
    )
    assert "valid_accuracy" in trained

    out = tmp_path / "colours.parquet"
    rayline("predict", str(spec), "--model", "latest", "--input", uri("images/colours"), "--out", str(out))
    frame = pd.read_parquet(out)
    assert len(frame) == 36
    # Labels come from the folder names in the object keys, as from a local folder's.
    assert frame.groupby("label").size().to_dict() == {"blue": 12, "green": 12, "red": 12}
    assert set(frame["predicted_label"]) <= {"blue", "green", "red"}
    for path, label in frame[["path", "label"]].itertuples(index=False):
        assert path.startswith(f"{BUCKET}/images/colours/{label}/"), path


@pytest.mark.parametrize(
    ("spec_text", "source"),
    [
        ("data: {source: '%s', label: clicked}\nmodel: {family: xgboost}\n", "tables/none.parquet"),
        ("data: {source: '%s'}\nmodel: {family: resnet18}\n", "images/none"),
    ],
)
def test_missing_key_is_one_line(tmp_path: Path, s3_env: None, spec_text: str, source: str) -> None:
    spec = tmp_path / "missing.yaml"
    spec.write_text("name: missing\n" + spec_text % uri(source))
    assert_one_line_error(rayline("train", str(spec), check=False), f"{uri(source)} does not exist")
