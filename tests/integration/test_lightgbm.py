"""LightGBM, the family added as a plug: its quality next to xgboost's on the taxi data, its Ray
Train path, tuning, both prediction engines and the report, through the public API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import rayline
import tablesets
from rayline.spec import spec_from_dict
from rayline.stages.report import build_report

TAXI = {"source": "builtin:taxi", "rows": 50_000, "label": "is_big_tip", "scale": ["trip_distance", "trip_duration"]}


def _taxi(family: dict[str, Any]) -> rayline.Spec:
    return spec_from_dict(
        {
            "name": f"taxi-{family['family']}",
            "data": TAXI,
            "split": {"valid_fraction": 0.3, "seed": 42},
            "model": family,
        }
    )


def test_auc_within_half_a_point_of_xgboost_on_the_same_split() -> None:
    xgb = rayline.train(_taxi({"family": "xgboost", "params": {"max_depth": 6, "eta": 0.3, "tree_method": "hist"}}))
    lgb = rayline.train(_taxi({"family": "lightgbm", "params": {"num_leaves": 31, "learning_rate": 0.1}}))
    assert xgb.path == lgb.path == "local"
    assert lgb.metrics["valid_auc"] > 0.6  # the generator's tips are learnable
    assert abs(lgb.metrics["valid_auc"] - xgb.metrics["valid_auc"]) <= 0.005, (lgb.metrics, xgb.metrics)


def _lightgbm(kind: tablesets.Kind, source: Path, **sections: Any) -> rayline.Spec:
    raw = tablesets.spec_dict(kind, source, name=f"lgb-{kind}", **sections)
    raw["model"] = {
        "family": "lightgbm",
        "num_boost_round": 20,
        "early_stopping_rounds": None,
        "params": {"num_leaves": 7},
    }
    return spec_from_dict(raw)


def test_two_ray_train_workers_then_both_engines(ray_session: object, tmp_path: Path) -> None:
    source = tablesets.make_table("binary", tmp_path / "data", rows=1200)
    spec = _lightgbm("binary", source, scaling={"num_workers": 2})
    trained = rayline.train(spec)
    assert trained.path == "ray-train:2"
    assert trained.metrics["valid_auc"] > 0.7 and "valid_loss" in trained.metrics

    local = rayline.predict(spec, model=trained.run_id, output=str(tmp_path / "local.parquet"))
    on_ray = spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": "ray"})})
    pooled = rayline.predict(on_ray, model=trained.run_id, output=str(tmp_path / "pooled.parquet"))
    assert (local.engine, pooled.engine) == ("local", "ray")
    a = pd.read_parquet(local.output).sort_values("x1").reset_index(drop=True)
    b = pd.read_parquet(pooled.output).sort_values("x1").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)

    evaluation = rayline.evaluate(spec, model=trained.run_id)
    assert evaluation.metrics["auc"] == pytest.approx(trained.metrics["valid_auc"], abs=2e-3)

    report = build_report(trained.run_id)
    assert {"feature_importance.png", "roc.png", "calibration.png"} <= {p.name for p in report.glob("*.png")}


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_other_tasks_and_tuning(kind: tablesets.Kind, ray_session: object, tmp_path: Path) -> None:
    source = tablesets.make_table(kind, tmp_path / "data")
    spec = _lightgbm(kind, source, tune={"num_samples": 2, "space": {"num_leaves": {"randint": [3, 15]}}})
    tuned = rayline.tune(spec)
    assert tuned.trials == 2 and tuned.best_run_id
    assert {"num_leaves"} == set(tuned.best_config)
    evaluation = rayline.evaluate(spec, model=tuned.best_run_id)
    assert ("accuracy" in evaluation.metrics) == (kind == "multiclass")
    assert ("rmse" in evaluation.metrics) == (kind == "regression")
