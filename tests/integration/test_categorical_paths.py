"""A text column, categorical by default (``data.categorical: auto``), through every path on the
same rows: batch prediction in this process and on a Ray Data actor pool, ``POST /predict`` over
real HTTP, the Open Inference Protocol (tritonclient, BYTES tensors) and ``POST /explain``, for
xgboost and LightGBM, with categories never seen in training and missing values among the rows.
A category unseen in training is a missing value everywhere, so every path answers the same
probabilities. One service for the module: the xgboost run, with the LightGBM run of the same
spec answering by name (multiplexed)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import oip
import rayline
import tablesets
from inprocess import own_home
from rayline.data.drift_profile import OTHER
from rayline.errors import DataError
from rayline.spec import Spec, spec_from_dict
from service import call, free_port

UNSEEN = ["purple", "orange", "RED"]  # never in training (case matters)


@dataclass(frozen=True)
class Served:
    home: Path
    spec: Spec
    runs: dict[str, str]  # family -> run id
    url: str
    rows: Path  # the rows every path predicts
    frame: pd.DataFrame


def odd_rows(rows: int = 200) -> pd.DataFrame:
    """Rows like the training ones, with unseen colors, missing colors and missing x1 mixed in."""
    frame = tablesets.binary_frame(rows=rows, seed=9).drop(columns=[tablesets.LABELS["binary"]])
    color = frame["color"].astype(object)
    color[::5] = [UNSEEN[i % len(UNSEEN)] for i in range(len(color[::5]))]
    color[1::7] = None
    frame["color"] = color
    frame.loc[2::9, "x1"] = np.nan
    return frame


@pytest.fixture(scope="module")
def served(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("categorical")
    with own_home(root):
        source = tablesets.make_table("binary", root / "data", rows=800)
        raw = tablesets.spec_dict("binary", source, name="cat-paths")
        assert "categorical" not in raw["data"]  # the default, auto, makes color a category
        raw["serve"] = {"num_replicas": 1, "num_cpus": 0.25}
        spec = spec_from_dict(raw)
        runs = {"xgboost": rayline.train(spec).run_id}
        lgb = {**raw, "model": {"family": "lightgbm", "num_boost_round": 20, "params": {"num_leaves": 7}}}
        runs["lightgbm"] = rayline.train(spec_from_dict(lgb)).run_id
        frame = odd_rows()
        path = root / "odd.parquet"
        frame.to_parquet(path, index=False)
        service = rayline.serve(spec, model=runs["xgboost"], port=free_port())
        try:
            yield Served(root / "home", spec, runs, service.url, path, frame)
        finally:
            from ray import serve

            serve.shutdown()  # release the replica's CPUs for later tests in this Ray


@pytest.fixture
def home(served: Served, monkeypatch: pytest.MonkeyPatch) -> Served:
    monkeypatch.setenv("RAYLINE_HOME", str(served.home))
    return served


def batch(s: Served, family: str, engine: str, tmp_path: Path) -> np.ndarray:
    spec = s.spec.model_copy(update={"predict": s.spec.predict.model_copy(update={"engine": engine})})
    result = rayline.predict(spec, model=s.runs[family], input=str(s.rows), output=str(tmp_path / f"{engine}.parquet"))
    assert result.engine == engine
    out = pd.read_parquet(result.output)
    # the pool may reorder rows: put them back by the input's own columns
    keys = ["x2", "count"]
    merged = s.frame[keys].merge(out[[*keys, "probability"]], on=keys, how="left", validate="one_to_one")
    return merged["probability"].to_numpy()


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON records: NaN and None both null (a missing value)."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return call(url, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_every_path_answers_the_same(home: Served, family: str, tmp_path: Path) -> None:
    s = home
    local = batch(s, family, "local", tmp_path)
    pooled = batch(s, family, "ray", tmp_path)
    np.testing.assert_allclose(pooled, local, atol=1e-6)

    run = s.runs[family]
    header = {"serve_multiplexed_model_id": run}
    status, body = post(f"{s.url}/predict", records(s.frame), header)
    assert status == 200, body
    assert body["model"] == run
    np.testing.assert_allclose([p["probability"] for p in body["predictions"]], local, atol=1e-6)

    # The Open Inference Protocol: text as BYTES; a missing text is an empty string (no category
    # was ever empty: an empty CSV cell is read as missing), a missing number NaN.
    http = oip.clients(s.url, "127.0.0.1:1")[0]
    columns = {
        "x1": s.frame["x1"].to_numpy(dtype=np.float64),
        "x2": s.frame["x2"].to_numpy(dtype=np.float64),
        "count": s.frame["count"].to_numpy(dtype=np.int64),
        "color": np.array([(c or "").encode() for c in s.frame["color"]], dtype=np.object_),
    }
    answered = oip.infer(http, s.spec.name, columns, version=run)[0]
    np.testing.assert_allclose(answered["probability"], local, atol=1e-6)

    # unseen categories are missing ones: the same answer as a null color
    unseen = s.frame["color"].isin(UNSEEN).to_numpy()
    as_missing = records(s.frame[unseen].assign(color=None))
    status, missing = post(f"{s.url}/predict", as_missing, header)
    assert status == 200
    np.testing.assert_allclose([p["probability"] for p in missing["predictions"]], local[unseen], atol=1e-9)

    # TreeSHAP over the category: contributions add up to the margin of the probability answered
    status, explained = post(f"{s.url}/explain", records(s.frame), header)
    assert status == 200, explained
    for explanation, p in zip(explained["explanations"], local, strict=True):
        assert list(explanation["contributions"]) == ["x1", "x2", "count", "color"]
        total = explanation["bias"] + sum(explanation["contributions"].values())
        assert total == pytest.approx(explanation["margin"], abs=1e-4)
        assert explanation["margin"] == pytest.approx(np.log(p / (1 - p)), abs=1e-4)


def test_drift_counts_unseen_categories_as_other(home: Served, tmp_path: Path) -> None:
    s = home
    report = rayline.drift(s.runs["xgboost"], input=str(s.rows), out=tmp_path / "drift")
    result = report.result
    assert result.rows == len(s.frame) and np.isfinite(result.features["color"])
    buckets = result.buckets["color"]
    other = buckets["actual"][buckets["labels"].index(OTHER)]
    assert other == pytest.approx(s.frame["color"].isin(UNSEEN).mean(), abs=0.01)  # unseen colors: other
    status, _ = post(f"{s.url}/predict", records(s.frame))  # counted by the live monitor
    assert status == 200
    with urllib.request.urlopen(f"{s.url}/healthz", timeout=60) as resp:
        assert resp.status == 200 and "drift" in json.loads(resp.read())


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_text_for_a_number_is_refused_by_batch_as_by_predict(home: Served, engine: str, tmp_path: Path) -> None:
    """'0.5' in x1: POST /predict refuses the string, and so does batch prediction on either
    engine, before any work, naming the file and the column."""
    s = home
    status, body = post(f"{s.url}/predict", [{**records(s.frame)[0], "x1": "0.5"}])
    assert status == 422 and "x1" in json.dumps(body)
    text = s.frame.assign(x1=s.frame["x1"].astype(str))
    path = tablesets.write(text, tmp_path / "in", "text-x1")
    spec = s.spec.model_copy(update={"predict": s.spec.predict.model_copy(update={"engine": engine})})
    with pytest.raises(DataError) as info:
        rayline.predict(spec, model=s.runs["xgboost"], input=str(path), output=str(tmp_path / "out.parquet"))
    assert str(info.value) == f"{path}: column 'x1' is string; the model was trained on numbers (double)"
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_both_engines_find_the_same_categories(ray_session: object, tmp_path: Path, fmt: str) -> None:
    """auto is resolved once for both readers: string, large_string and dictionary columns of a
    parquet file (a CSV's text columns) are the same categories read by pyarrow or by Ray Data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayline.data import get_kind

    frame = tablesets.binary_frame(rows=300).assign(size=lambda f: np.where(f["x2"] > 0, "L", "S"), city="x")
    path = tmp_path / f"typed.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.set_column(table.schema.get_field_index("size"), "size", table["size"].cast(pa.large_string()))
        table = table.set_column(table.schema.get_field_index("city"), "city", table["city"].dictionary_encode())
        pq.write_table(table, path)
    spec = tablesets.spec_for("binary", path)
    local, on_ray = get_kind("table").prepare_local(spec), get_kind("table").prepare_ray(spec)
    assert local.config["layout"]["categorical"] == {"color": tablesets.COLORS, "size": ["L", "S"], "city": ["x"]}
    assert on_ray.config["layout"] == local.config["layout"]
