"""``data.categorical: auto`` (the default) in process, no Ray: which columns become categories,
the categories stored with the model, one input policy for text and numbers, and a category
unseen in training taken as a missing value by both tree families on their batch, serving and
explanation paths alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from rayline.data.table_prepare import prepare_local
from rayline.data.table_schema import TableLayout
from rayline.data.tables import TableKind, features_frame
from rayline.errors import DataError
from rayline.families.lightgbm.family import LightGBMFamily, LightGBMPredictor
from rayline.families.xgboost.family import XGBoostFamily, XGBoostPredictor
from rayline.spec import Spec, spec_from_dict
from rayline.stages.contexts import LocalContext

ROWS = 800
COLORS = ["blue", "green", "red"]
SIZES = ["L", "M", "S"]


def typed_table(rows: int = ROWS, seed: int = 0) -> pa.Table:
    """Every kind of column auto has to judge: text as string, large_string and dictionary
    (pandas' category), a boolean, an integer and a float; the label depends on the texts."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    color = rng.choice(COLORS, size=rows)
    size = rng.choice(SIZES, size=rows)
    city = rng.choice(["a", "b"], size=rows)
    flag = rng.random(rows) < 0.5
    logit = 2.0 * x1 + 2.0 * (color == "red") - 1.5 * (size == "S") + 0.5 * flag + rng.normal(scale=0.5, size=rows)
    return pa.table(
        {
            "x1": pa.array(x1),
            "count": pa.array(rng.integers(0, 5, size=rows)),
            "flag": pa.array(flag),
            "color": pa.array(color.tolist(), pa.string()),
            "size": pa.array(size.tolist(), pa.large_string()),
            "city": pa.array(city.tolist()).dictionary_encode(),
            "clicked": pa.array((logit > 0).astype(np.int64)),
        }
    )


def spec_of(source: Path, family: str = "xgboost", **data: Any) -> Spec:
    model: dict[str, Any] = {"family": family, "num_boost_round": 25, "early_stopping_rounds": None}
    model["params"] = {"max_depth": 3, "eta": 0.3} if family == "xgboost" else {"num_leaves": 7, "min_data_in_leaf": 5}
    return spec_from_dict(
        {"name": "cat-auto", "data": {"source": str(source), "label": "clicked", **data}, "model": model}
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cat") / "typed.parquet"
    pq.write_table(typed_table(), path)
    return path


# ------------------------------------------------------------------------ which columns
def test_auto_is_the_default_and_takes_every_text_column(source: Path) -> None:
    spec = spec_of(source)
    assert spec.data.categorical == "auto"
    layout = TableLayout.from_dict(prepare_local(spec).config["layout"])
    # string, large_string and dictionary of strings; booleans and numbers stay numbers
    assert layout.categorical == {"color": COLORS, "size": SIZES, "city": ["a", "b"]}
    assert layout.dtypes["flag"] == "bool" and "flag" not in layout.categorical


def test_a_list_means_exactly_those_columns(source: Path) -> None:
    spec = spec_of(source, features=["x1", "count", "color"], categorical=["color", "count"])
    layout = TableLayout.from_dict(prepare_local(spec).config["layout"])
    assert layout.categorical == {"color": COLORS, "count": [0, 1, 2, 3, 4]}


def test_an_empty_list_refuses_text_naming_the_column_and_the_fix(source: Path) -> None:
    with pytest.raises(DataError) as info:
        prepare_local(spec_of(source, categorical=[]))
    assert "feature column 'color' is string, expected numbers" in str(info.value)
    assert "data.categorical" in (info.value.hint or "") and "auto" in (info.value.hint or "")


def test_a_listed_column_that_is_not_a_feature_is_named(source: Path) -> None:
    with pytest.raises(DataError, match=r"data\.categorical column 'clicked' is not a feature column"):
        prepare_local(spec_of(source, categorical=["color", "clicked"]))


def test_a_csv_text_column_is_categorical_too(tmp_path: Path) -> None:
    path = tmp_path / "typed.csv"
    typed_table().to_pandas().to_csv(path, index=False)
    layout = TableLayout.from_dict(prepare_local(spec_of(path)).config["layout"])
    assert set(layout.categorical) == {"color", "size", "city"}
    # the flag column is read back from CSV as booleans: still a number
    assert "flag" not in layout.categorical


# ------------------------------------------------------------------- one input policy
def layout_of(source: Path) -> TableLayout:
    return TableLayout.from_dict(prepare_local(spec_of(source)).config["layout"])


def test_an_unseen_category_is_missing(source: Path) -> None:
    layout = layout_of(source)
    rows = pd.DataFrame(
        {"x1": [0.1, 0.2, 0.3], "count": [1, 2, 3], "flag": [True, False, True]}
        | {"color": ["red", "purple", None], "size": ["S", "XXL", "M"], "city": ["a", "b", "z"]}
    )
    x = features_frame(rows, layout)
    assert x["color"].tolist()[0] == "red" and pd.isna(x["color"]).tolist() == [False, True, True]
    assert x["size"].cat.codes.tolist() == [2, -1, 1] and x["city"].cat.codes.tolist() == [0, 1, -1]
    assert list(x["color"].cat.categories) == COLORS


def test_text_for_a_number_is_refused_even_when_it_reads_as_one(source: Path) -> None:
    layout = layout_of(source)
    rows = pd.DataFrame({"x1": ["3.5"], "count": [1], "flag": [True], "color": ["red"], "size": ["S"], "city": ["a"]})
    with pytest.raises(DataError, match=r"input column 'x1' holds text \('3.5'\); the model was trained on numbers"):
        features_frame(rows, layout)
    # a number where the model read text is refused as /predict refuses it
    rows = rows.assign(x1=[3.5], color=[7])
    with pytest.raises(DataError, match=r"input column 'color' holds 7; the model was trained on text \(string\)"):
        features_frame(rows, layout)
    # columns with no value at all are missing values, whatever their type
    empty = rows.assign(x1=[None], color=[np.nan])
    assert features_frame(empty, layout)[["x1", "color"]].isna().all().all()


def test_batch_input_files_are_checked_like_requests(source: Path, tmp_path: Path) -> None:
    """A file whose number column is text (a CSV with quotes, a parquet of strings) fails before
    any work, naming the column, as POST /predict refuses the string."""
    spec = spec_of(source)
    meta = {"layout": prepare_local(spec).config["layout"]}
    kind = TableKind()
    frame = typed_table(20).to_pandas()
    cases = {
        "x1": (frame.assign(x1=frame["x1"].astype(str)), "column 'x1' is string; the model was trained on numbers"),
        "color": (frame.assign(color=np.arange(20)), "column 'color' is int64; the model was trained on text"),
    }
    for name, (bad, message) in cases.items():
        path = tmp_path / f"bad-{name}.parquet"
        bad.to_parquet(path, index=False)
        with pytest.raises(DataError, match=message):
            next(kind.local_batches(spec, meta, str(path), 100))
    # an all-missing column (Arrow's null type) is accepted: missing values
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).set_column(3, "color", pa.nulls(20)), path)
    assert len(next(kind.local_batches(spec, meta, str(path), 100))) == 20


def test_a_request_takes_any_string_for_a_category(source: Path) -> None:
    meta = {"layout": prepare_local(spec_of(source)).config["layout"]}
    model = TableKind().request_model(meta)
    row = {"x1": 0.5, "count": 2, "flag": True, "color": "never-seen", "size": None, "city": ""}
    assert model.model_validate([row]).root[0].__dict__["color"] == "never-seen"
    with pytest.raises(ValidationError, match="color"):
        model.model_validate([{**row, "color": 3}])
    inputs = {t.name: t.datatype for t in TableKind().tensor_inputs(meta)}
    texts = dict.fromkeys(["color", "size", "city"], "BYTES")
    assert inputs == {"x1": "FP64", "count": "INT64", "flag": "BOOL", **texts}


# ------------------------------------------------------------- both tree families agree
def trained(source: Path, tmp_path: Path, family: str) -> Any:
    spec = spec_of(source, family)
    prepared = prepare_local(spec)
    ctx = LocalContext(prepared.frames, cpus=1, workdir=tmp_path)
    (XGBoostFamily() if family == "xgboost" else LightGBMFamily()).train_loop(prepared.config, ctx)
    assert ctx.checkpoint is not None
    meta = json.loads((ctx.checkpoint / "meta.json").read_text())
    assert meta["layout"]["categorical"]["color"] == COLORS  # the categories travel in meta.json
    return (XGBoostPredictor if family == "xgboost" else LightGBMPredictor)(ctx.checkpoint)


ODD_ROWS = [
    {"x1": 0.5, "count": 1, "flag": True, "color": "red", "size": "S", "city": "a"},
    {"x1": 0.5, "count": 1, "flag": True, "color": "purple", "size": "S", "city": "a"},  # unseen
    {"x1": 0.5, "count": 1, "flag": True, "color": None, "size": "S", "city": "a"},  # missing
    {"x1": None, "count": 1, "flag": False, "color": "teal", "size": "XL", "city": "q"},
]


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_unseen_is_missing_on_the_batch_serving_and_explain_paths(family: str, source: Path, tmp_path: Path) -> None:
    predictor = trained(source, tmp_path, family)
    kind, meta = TableKind(), predictor.meta
    frame = pd.DataFrame(ODD_ROWS)
    batch = predictor.predict(frame)["probability"].to_numpy()
    items = kind.decode_request(kind.request_model(meta).model_validate(ODD_ROWS), meta)
    served = np.array([r["probability"] for r in predictor.predict_items(items)])
    np.testing.assert_allclose(served, batch, atol=1e-6)
    # unseen and missing are the same input to the model
    assert batch[1] == pytest.approx(batch[2], abs=1e-9) and batch[0] != pytest.approx(batch[1], abs=1e-3)
    # TreeSHAP over categories: contributions add up to the margin, and the margin is the prediction's
    for explained in (predictor.explain(frame), pd.DataFrame(predictor.explain_items(items))):
        if "contributions" in explained:
            contributions = pd.DataFrame(list(explained["contributions"]))
            total = contributions.sum(axis=1) + explained["bias"]
        else:
            total = explained[list(ODD_ROWS[0])].sum(axis=1) + explained["bias"]
        np.testing.assert_allclose(total, explained["margin"], atol=1e-5)
        np.testing.assert_allclose(1 / (1 + np.exp(-explained["margin"].to_numpy())), batch, atol=1e-6)
