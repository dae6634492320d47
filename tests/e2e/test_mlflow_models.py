"""Every rayline model is an MLflow model: after `rayline promote`, MLflow's own tools
(``mlflow.pyfunc.load_model``, ``mlflow models predict``, ``mlflow models serve``, no rayline
loader) give what `rayline predict` writes for the same rows; runs logged before models were
MLflow models still resolve, predict and promote."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import imagesets
import tablesets
from inprocess import rayline_here
from rayline.registry import MODEL_PATH, open_registry
from rayline.spec import Spec
from rayline.stages.train import train

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PORTS = range(21300, 21400)  # this module's share of the test ports
LOCAL = ("--env-manager", "local")  # rayline is installed here: no environment of MLflow's making
SERVE_START_S = 120.0  # `mlflow models serve` imports mlflow, rayline and the family, then uvicorn's worker


@pytest.fixture(autouse=True)
def tracking(rayline_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's tools, in this process and in the commands, read the run registry's own store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{rayline_home / 'mlflow.db'}")


def write_spec(spec: Spec, folder: Path) -> Path:
    path = folder / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return path


def promote_champion(capsys: pytest.CaptureFixture[str], run_id: str) -> None:
    code, out, err = rayline_here(capsys, "promote", run_id, "--alias", "champion")
    assert code == 0, err
    assert "champion" in out


def rayline_predict(capsys: pytest.CaptureFixture[str], spec_file: Path, rows: Path, out: Path) -> pd.DataFrame:
    code, _, err = rayline_here(
        capsys, "predict", str(spec_file), "--model", "champion", "--input", str(rows), "--out", str(out)
    )
    assert code == 0, err
    return pd.read_parquet(out)


def mlflow_env(home: Path) -> dict[str, str]:
    """MLflow's CLI on the run registry's store; this venv first on PATH (`mlflow models serve` runs `uvicorn`)."""
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{home / 'mlflow.db'}"
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def mlflow_predict(home: Path, uri: str, rows: Path, content_type: str, tmp: Path) -> pd.DataFrame:
    out = tmp / f"mlflow-predictions-{content_type}.json"
    done = subprocess.run(
        [
            str(BIN / "mlflow"),
            "models",
            "predict",
            "-m",
            uri,
            "-i",
            str(rows),
            "-t",
            content_type,
            *LOCAL,
            "-o",
            str(out),
        ],
        env=mlflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.DataFrame(json.loads(out.read_text())["predictions"])


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {PORTS}")


@contextlib.contextmanager
def mlflow_serving(home: Path, uri: str, log: Path) -> Iterator[str]:
    """`mlflow models serve` in a session of its own (it starts uvicorn): its URL once /ping
    answers, within SERVE_START_S; the session is ended by its leader's id after."""
    port = free_port()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", uri, *LOCAL, "-h", "127.0.0.1", "-p", str(port)],
            env=mlflow_env(home),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            assert proc.poll() is None, f"mlflow models serve exited {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /ping answer in {SERVE_START_S:g} s: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def invocations(url: str, payload: dict[str, Any]) -> pd.DataFrame:
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return pd.DataFrame(json.loads(answer.read())["predictions"])


def assert_same(got: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    """``got`` has rayline's prediction columns, equal to ``expected``'s (probabilities to 1e-6)."""
    assert list(got.columns) == columns
    assert len(got) == len(expected)
    assert [str(v) for v in got["predicted_label"]] == [str(v) for v in expected["predicted_label"]]
    np.testing.assert_allclose(got["probability"].to_numpy(float), expected["probability"].to_numpy(float), atol=1e-6)
    if "probabilities" in columns:
        np.testing.assert_allclose(
            np.stack([np.asarray(p, dtype=float) for p in got["probabilities"]]),
            np.stack([np.asarray(p, dtype=float) for p in expected["probabilities"]]),
            atol=1e-6,
        )


def test_a_table_model_with_a_text_column_loads_predicts_and_serves_with_mlflow(
    tmp_path: Path, rayline_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow.artifacts
    import mlflow.models
    import mlflow.pyfunc

    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name="mlflow-table")  # declares `color` categorical
    run_id = train(spec).run_id
    promote_champion(capsys, run_id)
    rows = tablesets.frame("binary", rows=40, seed=7).drop(columns=["clicked"])
    rows.loc[3, "color"] = "purple"  # a category the model never saw: still the same prediction
    csv = tablesets.write(rows, tmp_path, "rows", "csv")
    expected = rayline_predict(capsys, write_spec(spec, tmp_path), csv, tmp_path / "out.parquet")
    columns = ["probability", "predicted_label"]
    assert set(columns) <= set(expected.columns) and expected["predicted_label"].nunique() == 2
    uri = "models:/mlflow-table@champion"

    model = mlflow.pyfunc.load_model(uri)
    signature = model.metadata.get_input_schema().to_dict()
    assert [(c["name"], c["type"]) for c in signature] == [
        ("x1", "double"),
        ("x2", "double"),
        ("count", "long"),
        ("color", "string"),
    ]
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "downloaded"))
    example = mlflow.models.Model.load(local).load_input_example(local)
    assert list(example.columns) == ["x1", "x2", "count", "color"] and len(example) == 3
    assert (Path(local) / "checkpoint" / "model.ubj").is_file()  # rayline's checkpoint, inside the MLflow model
    assert_same(model.predict(pd.read_csv(csv)), expected, columns)
    assert_same(mlflow_predict(rayline_home, uri, csv, "csv", tmp_path), expected, columns)
    with mlflow_serving(rayline_home, uri, tmp_path / "serve.log") as url:
        served = invocations(url, {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
        with pytest.raises(urllib.error.HTTPError) as refused:
            invocations(
                url, {"dataframe_split": {"columns": ["x1", "x2", "count", "color"], "data": [["a", 1, 2, "red"]]}}
            )
    assert_same(served, expected, columns)
    assert refused.value.code == 400


def test_an_image_model_takes_png_bytes_in_mlflow_as_rayline_predict_reads_the_files(
    tmp_path: Path, rayline_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow.pyfunc

    source = imagesets.digits(tmp_path / "digits", per_class=10)
    spec = imagesets.spec_for(source, name="mlflow-digits")
    run_id = train(spec).run_id
    promote_champion(capsys, run_id)
    new = imagesets.digits(tmp_path / "new", per_class=1)
    expected = rayline_predict(capsys, write_spec(spec, tmp_path), new, tmp_path / "out.parquet")
    expected = expected.sort_values("path").reset_index(drop=True)
    files = [Path(p) for p in expected["path"]]
    assert len(files) == 10
    columns = ["predicted_label", "probability", "probabilities"]
    uri = "models:/mlflow-digits@champion"
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
    split = {"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}
    request = tmp_path / "images.json"
    request.write_text(json.dumps(split))

    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.get_input_schema().to_dict() == [{"type": "binary", "name": "image", "required": True}]
    assert_same(model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]})), expected, columns)
    assert_same(mlflow_predict(rayline_home, uri, request, "json", tmp_path), expected, columns)
    with mlflow_serving(rayline_home, uri, tmp_path / "serve.log") as url:
        served = invocations(url, split)
        not_an_image = base64.b64encode(b"not an image").decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            invocations(url, {"dataframe_split": {"columns": ["image"], "data": [[encoded[0]], [not_an_image]]}})
    assert_same(served, expected, columns)
    assert refused.value.code == 400
    assert "image.1: not a decodable image" in json.loads(refused.value.read())["message"]


def test_a_run_logged_before_mlflow_models_still_resolves_predicts_and_promotes(
    tmp_path: Path, rayline_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name="mlflow-old")
    new = train(spec).run_id
    registry = open_registry()
    assert registry.get(new).model_path == MODEL_PATH
    # The old way: the bare checkpoint folder at `checkpoint/`, no MLmodel.
    with registry.start_run(spec.name, kind="train", family="xgboost", spec=spec) as run:
        run.log_checkpoint(registry.checkpoint_dir(new))
    old = registry.get(run.run_id)
    assert old.has_model and old.checkpoint_path == "checkpoint"
    folder = registry.checkpoint_dir(old.run_id)
    assert folder.name == "checkpoint" and folder.parent.name == "artifacts" and (folder / "model.ubj").is_file()
    assert not (folder.parent / MODEL_PATH).exists()

    code, _, err = rayline_here(capsys, "promote", old.run_id, "--alias", "champion")
    assert code == 0, err
    (version,) = registry.versions(spec.name)
    assert version.run_id == old.run_id and version.aliases == ("champion",)
    source_uri = registry.client.get_model_version(spec.name, str(version.version)).source
    assert source_uri.endswith(f"/{old.run_id}/artifacts/checkpoint")
    rows = tablesets.write(tablesets.frame("binary", rows=30, seed=3), tmp_path, "rows")
    by_old = rayline_predict(capsys, write_spec(spec, tmp_path), rows, tmp_path / "old.parquet")
    code, _, err = rayline_here(
        capsys,
        "predict",
        str(tmp_path / f"{spec.name}.yaml"),
        "--model",
        new,
        "--input",
        str(rows),
        "--out",
        str(tmp_path / "new.parquet"),
    )
    assert code == 0, err
    by_new = pd.read_parquet(tmp_path / "new.parquet")
    pd.testing.assert_frame_equal(by_old, by_new)
