"""TreeSHAP explanations of the tree families, in process (no Ray): real xgboost and LightGBM
models trained on small tables, loaded from their checkpoints as serving loads them.

Every check compares against the booster's own numbers: the contributions of a row add up to
the margin, the margin is the booster's ``output_margin`` / ``raw_score`` prediction, and the
probability it implies is ``predict``'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost

import tablesets
from rayline.data.table_prepare import prepare_local
from rayline.data.tables import TableKind, features_frame
from rayline.datasets.taxi import generate_taxi
from rayline.families import Explainer, get_family
from rayline.spec import spec_from_dict
from rayline.stages.contexts import LocalContext

TOL = 1e-4
TAXI_LABEL = "is_big_tip"


@dataclass
class Trained:
    predictor: Any
    meta: dict[str, Any]
    valid: pd.DataFrame


def train(tmp: Path, raw: dict[str, Any]) -> Trained:
    """Train the spec ``raw`` in this process; its checkpoint loaded by the family, as a service does."""
    spec = spec_from_dict(raw)
    prepared = prepare_local(spec)
    work = tmp / "work"
    work.mkdir()
    ctx = LocalContext(prepared.frames, cpus=1, workdir=work)
    family = get_family(raw["model"]["family"])
    family.train_loop(prepared.config, ctx)
    assert ctx.checkpoint is not None
    meta = json.loads((ctx.checkpoint / "meta.json").read_text())
    return Trained(family.load(ctx.checkpoint, cpus=1), meta, prepared.frames["valid"])


def xgboost_model() -> dict[str, Any]:
    return {
        "family": "xgboost",
        "num_boost_round": 15,
        "early_stopping_rounds": None,
        "params": {"max_depth": 3, "eta": 0.3, "tree_method": "hist"},
    }


def lightgbm_model() -> dict[str, Any]:
    return {"family": "lightgbm", "num_boost_round": 15, "early_stopping_rounds": None, "params": {"num_leaves": 7}}


def taxi_spec(tmp: Path, model: dict[str, Any]) -> dict[str, Any]:
    source = tmp / "taxi.parquet"
    generate_taxi(3000, seed=3).to_pandas().to_parquet(source, index=False)
    return {
        "name": f"taxi-{model['family']}",
        # scaled columns: contributions are of the features as the model sees them
        "data": {"source": str(source), "label": TAXI_LABEL, "scale": ["trip_distance", "trip_duration"]},
        "split": {"valid_fraction": 0.3, "seed": 42},
        "model": model,
    }


def table_spec(tmp: Path, kind: tablesets.Kind, model: dict[str, Any]) -> dict[str, Any]:
    raw = tablesets.spec_dict(kind, tablesets.make_table(kind, tmp, rows=500), name=f"{kind}-{model['family']}")
    raw["model"] = model
    return raw


CASES = {
    "xgboost-taxi": lambda tmp: taxi_spec(tmp, xgboost_model()),
    "xgboost-binary-categorical": lambda tmp: table_spec(tmp, "binary", xgboost_model()),
    "xgboost-multiclass": lambda tmp: table_spec(tmp, "multiclass", xgboost_model()),
    "xgboost-regression": lambda tmp: table_spec(tmp, "regression", xgboost_model()),
    "lightgbm-taxi": lambda tmp: taxi_spec(tmp, lightgbm_model()),
    "lightgbm-binary-categorical": lambda tmp: table_spec(tmp, "binary", lightgbm_model()),
    "lightgbm-multiclass": lambda tmp: table_spec(tmp, "multiclass", lightgbm_model()),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    tmp = tmp_path_factory.mktemp(request.param)
    return train(tmp, CASES[request.param](tmp))


def booster_margins(trained: Trained, frame: pd.DataFrame) -> np.ndarray:
    """The booster's own margins for ``frame`` ([n], or [n, classes]), asked directly."""
    x = features_frame(frame, trained.predictor.layout)
    booster = trained.predictor.booster
    if isinstance(booster, xgboost.Booster):
        matrix = xgboost.DMatrix(x, enable_categorical=bool(trained.predictor.layout.categorical))
        return np.asarray(booster.predict(matrix, output_margin=True), dtype=np.float64)
    assert isinstance(booster, lightgbm.Booster)
    return np.asarray(booster.predict(x, raw_score=True), dtype=np.float64)


def softmax(margins: np.ndarray) -> np.ndarray:
    exp = np.exp(margins - margins.max(axis=1, keepdims=True))
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def test_contributions_add_up_to_the_boosters_margin(trained: Trained) -> None:
    predictor, valid = trained.predictor, trained.valid
    assert isinstance(trained.predictor, Explainer)  # what serving checks before offering it
    frame = predictor.explain(valid)
    features = predictor.layout.features
    assert list(frame.columns) == [*features, "bias", "margin"]
    assert len(frame) == len(valid) and (frame.index == valid.index).all()
    total = frame[features].sum(axis=1) + frame["bias"]
    np.testing.assert_allclose(total, frame["margin"], atol=TOL, rtol=0)

    own = booster_margins(trained, valid)
    predicted = predictor.predict(valid)
    task = predictor.layout.task
    if task == "multiclass":
        # the predicted class's margin: the highest, and its softmax is predict's probability
        np.testing.assert_allclose(frame["margin"], own.max(axis=1), atol=TOL, rtol=0)
        np.testing.assert_allclose(softmax(own).max(axis=1), predicted["probability"], atol=1e-5)
    else:
        np.testing.assert_allclose(frame["margin"], own, atol=TOL, rtol=0)
    if task == "binary":
        sigmoid = 1.0 / (1.0 + np.exp(-frame["margin"].to_numpy()))
        np.testing.assert_allclose(sigmoid, predicted["probability"], atol=1e-5)
    if task == "regression":
        np.testing.assert_allclose(frame["margin"], predicted["prediction"], atol=TOL)
    # the explanations say something: not every feature's contribution is zero
    assert (frame[features].abs().to_numpy() > 1e-6).any(axis=0).sum() >= 2


def test_explain_items_answer_as_the_service_does(trained: Trained) -> None:
    """Request records (validated and decoded by the table kind) get the frame's numbers and
    ``predict_items``'s prediction, as JSON-ready records."""
    predictor, valid = trained.predictor, trained.valid.head(25)
    kind = TableKind()
    body = kind.request_model(trained.meta).model_validate(valid[predictor.layout.features].to_dict(orient="records"))
    items = kind.decode_request(body, trained.meta)
    explained = predictor.explain_items(items)
    json.dumps(explained, allow_nan=False)  # JSON-ready: Python floats, nothing infinite
    frame = predictor.explain(valid)
    predictions = predictor.predict_items(items)
    assert len(explained) == len(items)
    same = 0
    for record, (_, row), prediction in zip(explained, frame.iterrows(), predictions, strict=True):
        assert list(record["contributions"]) == predictor.layout.features
        total = record["bias"] + sum(record["contributions"].values())
        assert total == pytest.approx(record["margin"], abs=TOL)
        assert record["margin"] == pytest.approx(row["margin"], abs=TOL)
        contributions = np.array(list(record["contributions"].values()))
        same += bool(np.allclose(contributions, row[predictor.layout.features].to_numpy(float), atol=TOL, rtol=0))
        assert {k: v for k, v in record.items() if k in prediction} == prediction
    # Requests are scaled in float32 (predict_items' matrix), frames in float64: a value that
    # lands on a split threshold can take the other branch of a split whose two sides score the
    # same (same margin, another attribution). Rare; most rows are attributed identically.
    assert same >= 0.8 * len(items), same
    if predictor.layout.task == "binary":
        for record in explained:
            assert 1.0 / (1.0 + np.exp(-record["margin"])) == pytest.approx(record["probability"], abs=1e-5)


def test_numbers_past_float32_are_explained_as_predicted(trained: Trained) -> None:
    """1e300 is a valid JSON number (a double) but infinite as float32, which the model's matrix
    is: the explanation still comes, finite, and of the prediction ``predict_items`` made."""
    predictor, meta = trained.predictor, trained.meta
    floats = [f for f in predictor.layout.features if predictor.layout.dtypes.get(f) == "double"]
    rows = trained.valid.head(2)[predictor.layout.features].to_dict(orient="records")
    rows[0][floats[0]], rows[1][floats[-1]] = 1e300, -1e300
    kind = TableKind()
    items = kind.decode_request(kind.request_model(meta).model_validate(rows), meta)
    explained = predictor.explain_items(items)
    json.dumps(explained, allow_nan=False)
    for record, prediction in zip(explained, predictor.predict_items(items), strict=True):
        assert record["bias"] + sum(record["contributions"].values()) == pytest.approx(record["margin"], abs=TOL)
        if "probability" in prediction and predictor.layout.task == "binary":
            p = prediction["probability"]
            assert record["margin"] == pytest.approx(np.log(p / (1 - p)), abs=TOL)
        assert {k: v for k, v in record.items() if k in prediction} == prediction
    # batch inference reads a frame the same numbers can be in (a parquet's doubles): it predicts
    # them as serving does, where a DMatrix of them would refuse infinity
    key = "prediction" if predictor.layout.task == "regression" else "probability"
    served = [prediction[key] for prediction in predictor.predict_items(items)]
    assert predictor.predict(pd.DataFrame(rows))[key].tolist() == pytest.approx(served, abs=1e-5)
