"""Training XGBoost on small tables: in-process and Ray Train paths, registry entries, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tablesets
from rayline.data import get_kind
from rayline.families import get_family
from rayline.registry import open_registry
from rayline.spec import spec_from_dict
from rayline.stages.evaluate import evaluate
from rayline.stages.train import TrainResult, train

KINDS = ("binary", "multiclass", "regression")


def read_back(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def assert_beats_baseline(kind: tablesets.Kind, metrics: dict[str, float], labels: pd.Series) -> None:
    base = tablesets.baseline(kind, labels)
    assert "valid_loss" in metrics, metrics
    if kind == "regression":
        assert metrics["valid_rmse"] == pytest.approx(metrics["valid_loss"])
        assert metrics["valid_rmse"] < 0.3 * base["rmse"], (metrics, base)
        assert metrics["valid_mae"] < 0.3 * base["mae"], (metrics, base)
        return
    assert metrics["valid_accuracy"] > base["accuracy"] + 0.15, (metrics, base)
    assert metrics["valid_loss"] < 0.6 * base["logloss"], (metrics, base)
    if kind == "binary":
        assert 0.9 < metrics["valid_auc"] <= 1.0, metrics
    else:
        assert "valid_auc" not in metrics


def assert_checkpoint_predicts(kind: tablesets.Kind, run_id: str, df: pd.DataFrame) -> None:
    """The registered checkpoint loads through the family and predicts the table well."""
    folder = open_registry().checkpoint_dir(run_id)
    predictor = get_family("xgboost").load(folder)
    out = predictor.predict(df)
    assert len(out) == len(df)
    label = df[tablesets.LABELS[kind]]
    if kind == "regression":
        rmse = float(np.sqrt(((out["prediction"].to_numpy() - label.to_numpy()) ** 2).mean()))
        assert rmse < 0.3 * tablesets.baseline(kind, label)["rmse"]
        return
    accuracy = float((out["predicted_label"].astype(str).to_numpy() == label.astype(str).to_numpy()).mean())
    assert accuracy > tablesets.baseline(kind, label)["accuracy"] + 0.15
    if kind == "binary":
        assert out["probability"].between(0, 1).all()
        assert set(out["predicted_label"]) <= {0, 1}
    else:
        probs = np.stack(out["probabilities"].to_numpy())
        assert probs.shape == (len(df), 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        assert set(out["predicted_label"]) <= set(tablesets.CLASSES)


def assert_registered(result: TrainResult, source: Path, rows: int, path_tag: str) -> Any:
    registry = open_registry()
    record = registry.get(result.run_id)
    assert record.kind == "train"
    assert record.family == "xgboost"
    assert record.status == "FINISHED"
    assert record.has_model
    assert record.tags["rayline.path"] == path_tag
    # lineage: what the model was trained on
    assert record.tags["rayline.data.rows"] == str(rows)
    assert record.tags["rayline.data.source"] == str(source)
    assert int(record.tags["rayline.data.bytes"]) == source.stat().st_size
    assert record.params["model.num_boost_round"] == "20"
    assert record.params["model.params.max_depth"] == "3"
    assert record.params["split.seed"] == "42"
    assert record.params["data.source"] == str(source)
    # the run's metric is the final value the API returned
    assert record.metrics["valid_loss"] == pytest.approx(result.metrics["valid_loss"])
    history = registry.client.get_metric_history(result.run_id, "valid_loss")
    steps = [m.step for m in sorted(history, key=lambda m: m.step)]
    assert len(steps) >= 4, steps  # reports at rounds 5, 10, 15, then the final value
    assert steps[:3] == [5, 10, 15]
    assert len(set(steps)) == len(steps)
    final = max(history, key=lambda m: m.step)
    assert final.value == pytest.approx(result.metrics["valid_loss"])
    return record


def assert_no_scratch_left(home: Path) -> None:
    leftovers = [p.name for p in home.iterdir() if p.name.startswith("rayline-train-")]
    assert leftovers == []


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("kind", KINDS)
def test_in_process_train(kind: tablesets.Kind, fmt: tablesets.Fmt, tmp_path: Path, rayline_home: Path) -> None:
    source = tablesets.make_table(kind, tmp_path / "data", fmt)
    df = read_back(source)
    progress: list[dict[str, float]] = []
    spec = tablesets.spec_for(kind, source, name=f"{kind}-{fmt}")

    result = train(spec, on_report=lambda m: progress.append(dict(m)))

    assert result.path == "local"
    assert [h["round"] for h in result.history] == [5.0, 10.0, 15.0, 20.0]
    assert [p["round"] for p in progress] == [5.0, 10.0, 15.0, 20.0]
    assert_beats_baseline(kind, result.metrics, df[tablesets.LABELS[kind]])
    assert_registered(result, source, len(df), "local")
    assert_checkpoint_predicts(kind, result.run_id, df)
    assert_no_scratch_left(rayline_home)


def test_feature_subset_and_scaling(tmp_path: Path) -> None:
    """data.features limits the model's inputs; data.scale statistics come from the train split."""
    source = tablesets.make_table("regression", tmp_path / "data")
    spec = tablesets.spec_for("regression", source, data={"features": ["x1", "x2"], "scale": ["x1"]})
    result = train(spec)
    folder = open_registry().checkpoint_dir(result.run_id)
    predictor: Any = get_family("xgboost").load(folder)
    assert predictor.layout.features == ["x1", "x2"]
    lo, hi = predictor.layout.scaler["x1"]
    train_rows = get_kind("table").prepare_local(spec).frames["train"]
    assert (lo, hi) == (train_rows["x1"].min(), train_rows["x1"].max())
    # a frame without the unused column x3 predicts fine
    out = predictor.predict(read_back(source).drop(columns=["x3"]))
    assert len(out) == 600


@pytest.mark.slow
def test_ray_train_path(
    ray_session: object, tmp_path: Path, rayline_home: Path, no_checkpoint_copies_left: None
) -> None:
    """num_workers: 2 trains on Ray Train workers; the split is the in-process one (evaluate agrees)."""
    source = tablesets.make_table("binary", tmp_path / "data", "csv")
    df = read_back(source)
    spec = tablesets.spec_for("binary", source, name="binary-ray", scaling={"num_workers": 2})

    result = train(spec)

    assert result.path.startswith("ray-train"), result.path
    assert result.path == "ray-train:2"
    assert_beats_baseline("binary", result.metrics, df["clicked"])
    assert_registered(result, source, len(df), "ray-train:2")
    assert_checkpoint_predicts("binary", result.run_id, df)
    assert_no_scratch_left(rayline_home)

    # evaluate() on the default input (the validation split) sees the rows training validated on
    evaluation = evaluate(spec, model=result.run_id)
    valid_rows = len(get_kind("table").prepare_local(spec).frames["valid"])
    assert evaluation.rows == valid_rows
    # Close, not equal: Ray Train splits each dataset into equal shards (streaming_split(equal=True)),
    # which drops up to num_workers - 1 validation rows from the training-time metrics.
    assert evaluation.metrics["accuracy"] == pytest.approx(result.metrics["valid_accuracy"], abs=1.5 / valid_rows)
    assert evaluation.metrics["logloss"] == pytest.approx(result.metrics["valid_loss"], abs=0.03)
    assert evaluation.metrics["auc"] == pytest.approx(result.metrics["valid_auc"], abs=0.01)
    # binary evaluation: per-class accuracy and a confusion matrix over the two labels
    assert set(evaluation.per_class) == {"0", "1"}
    assert sum(sum(row.values()) for row in evaluation.confusion.values()) == valid_rows
    correct = sum(evaluation.confusion[c].get(c, 0) for c in evaluation.confusion)
    assert correct / valid_rows == pytest.approx(evaluation.metrics["accuracy"])
    # stored on the model's run as eval_* metrics
    stored = open_registry().get(result.run_id).metrics
    assert stored["eval_accuracy"] == pytest.approx(evaluation.metrics["accuracy"])
    assert stored["eval_auc"] == pytest.approx(evaluation.metrics["auc"])
    assert stored["eval_logloss"] == pytest.approx(evaluation.metrics["logloss"])
    assert stored["eval_rows"] == valid_rows
    assert stored["valid_loss"] == pytest.approx(result.metrics["valid_loss"])  # untouched


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.mark.parametrize(("kind", "fmt"), [("binary", "parquet"), ("multiclass", "csv")])
def test_split_is_the_same_on_both_paths(
    kind: tablesets.Kind, fmt: tablesets.Fmt, ray_session: object, tmp_path: Path
) -> None:
    """The content-hash split: reproducible, and the same rows whether pyarrow or Ray Data read them."""
    source = tablesets.make_table(kind, tmp_path / "data", fmt)
    # declare an integer column categorical too: its categories must match across the paths, as must
    # the min/max of the training side (data.scale)
    extra: dict[str, Any] = {"data": {"categorical": ["color", "count"], "scale": ["x1"]}} if kind == "binary" else {}
    spec = tablesets.spec_for(kind, source, **extra)

    local, again = get_kind("table").prepare_local(spec), get_kind("table").prepare_local(spec)
    on_ray = get_kind("table").prepare_ray(spec)

    for split in ("train", "valid"):
        pd.testing.assert_frame_equal(local.frames[split], again.frames[split])
        from_ray = on_ray.datasets[split].to_pandas()
        pd.testing.assert_frame_equal(_sorted(local.frames[split]), _sorted(from_ray), check_dtype=False)
    assert local.rows == on_ray.rows == 600
    assert 0.1 < len(local.frames["valid"]) / 600 < 0.3  # valid_fraction 0.2
    assert local.config["layout"] == on_ray.config["layout"]

    # another seed moves rows across the split
    reseeded = spec_from_dict({**tablesets.spec_dict(kind, source, **extra), "split": {"seed": 7}})
    other = get_kind("table").prepare_local(reseeded)
    assert not _sorted(other.frames["valid"]).equals(_sorted(local.frames["valid"]))


def test_taxi_smoke(rayline_home: Path) -> None:
    spec = spec_from_dict(
        {
            "name": "taxi-smoke",
            "data": {"source": "builtin:taxi", "rows": 3000, "label": "is_big_tip"},
            "model": {"family": "xgboost", "num_boost_round": 20, "params": {"max_depth": 3, "eta": 0.3}},
            "train": {"report_every": 5},
        }
    )
    result = train(spec)
    assert result.path == "local"
    assert 0.55 < result.metrics["valid_auc"] <= 1.0
    assert result.metrics["valid_loss"] < 0.693  # better than a coin
    record = open_registry().get(result.run_id)
    assert record.tags["rayline.data.rows"] == "3000"
    assert record.has_model
    assert list((rayline_home / "data").glob("taxi-3000-seed0.parquet"))
