"""Tune, batch predict and evaluate on small tables, against real Ray, xgboost and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

import tablesets
from rayline import runtime
from rayline.data import get_kind
from rayline.families import get_family
from rayline.registry import open_registry
from rayline.spec import Spec
from rayline.stages.evaluate import evaluate
from rayline.stages.predict import predict
from rayline.stages.train import train
from rayline.stages.tune import tune

pytestmark = pytest.mark.slow

SPACE = {"max_depth": {"randint": [2, 6]}, "eta": {"uniform": [0.05, 0.5]}}


def valid_split(spec: Spec) -> pd.DataFrame:
    return get_kind("table").prepare_local(spec).frames["valid"]


def read_output(path: Path) -> pd.DataFrame:
    assert path.is_dir() or path.is_file(), path
    return pd.read_parquet(path)


def siblings(path: Path) -> list[str]:
    """Everything next to an output: a temp or moved-aside copy would show up here."""
    return sorted(p.name for p in path.parent.iterdir())


# ------------------------------------------------------------------------------------ tune
@pytest.mark.parametrize(("scheduler", "samples"), [("fifo", 3), ("asha", 4)])
def test_tune_registers_trials_and_best(
    scheduler: str, samples: int, ray_session: object, tmp_path: Path, no_checkpoint_copies_left: None
) -> None:
    source = tablesets.make_table("binary", tmp_path / "data")
    name = f"tune-{scheduler}"
    # a plain training run of the same spec competes for "best" too
    baseline_run = train(tablesets.spec_for("binary", source, name=name)).run_id
    spec = tablesets.spec_for(
        "binary", source, name=name, tune={"num_samples": samples, "scheduler": scheduler, "space": SPACE}
    )
    reports: list[dict[str, float]] = []

    result = tune(spec, on_report=lambda m: reports.append(dict(m)))

    assert result.trials == samples
    assert set(result.best_config) == set(SPACE)
    assert 2 <= result.best_config["max_depth"] < 6
    assert 0.05 <= result.best_config["eta"] <= 0.5
    assert reports and "valid_loss" in reports[-1]

    registry = open_registry()
    parent = registry.get(result.run_id)
    assert parent.kind == "tune" and not parent.has_model and parent.status == "FINISHED"
    assert parent.params["tune.scheduler"] == scheduler
    assert parent.params["tune.num_samples"] == str(samples)
    trials = registry.list_runs(name, kind="trial")
    assert len(trials) == samples
    assert {t.parent_id for t in trials} == {result.run_id}
    assert all("valid_loss" in t.metrics for t in trials)
    with_model = [t for t in trials if t.has_model]
    assert [t.run_id for t in with_model] == [result.best_run_id]
    best_trial = with_model[0]
    assert best_trial.metrics["valid_loss"] == pytest.approx(min(t.metrics["valid_loss"] for t in trials))
    assert parent.metrics["best_valid_loss"] == pytest.approx(best_trial.metrics["valid_loss"])
    assert parent.tags["rayline.best_trial_run"] == result.best_run_id
    assert best_trial.params["trial.max_depth"] == str(result.best_config["max_depth"])
    assert best_trial.params["model.params.max_depth"] == str(result.best_config["max_depth"])
    assert best_trial.tags["rayline.data.rows"] == "600"
    # each trial's learning curve (Tune's per-trial result logs) lands on its run: 20 rounds,
    # a report every 5; the trial's final values are its last point
    curve = registry.metric_history(best_trial.run_id, "valid_loss")
    assert len(curve) >= 2 and curve[-1][1] == pytest.approx(best_trial.metrics["valid_loss"])

    # "best" is the lowest valid_loss among every servable run of the spec (train runs included)
    servable = [r for r in registry.list_runs(name) if r.has_model and r.status == "FINISHED"]
    assert {r.run_id for r in servable} == {baseline_run, result.best_run_id}
    best = registry.resolve(name, "best", metric="valid_loss", mode="min")
    assert best.metrics["valid_loss"] == min(r.metrics["valid_loss"] for r in servable)
    worst = registry.resolve(name, "best", metric="valid_loss", mode="max")
    assert worst.metrics["valid_loss"] == max(r.metrics["valid_loss"] for r in servable)

    # the best trial's checkpoint is a working model
    predictor = get_family("xgboost").load(registry.checkpoint_dir(result.best_run_id))
    out = predictor.predict(tablesets.binary_frame())
    assert ((out["probability"] >= 0.5).astype(int) == tablesets.binary_frame()["clicked"]).mean() > 0.8


# --------------------------------------------------------------------------------- predict
def test_predict_binary(ray_session: object, tmp_path: Path, rayline_home: Path) -> None:
    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name="pred-bin")
    first = train(spec).run_id
    second = train(tablesets.spec_for("binary", source, name="pred-bin", model={"params": {"max_depth": 2}})).run_id

    # default input: the validation split, default output under RAYLINE_HOME, newest model; a
    # small local table is predicted in this process (predict.engine: auto)
    latest = predict(spec, model="latest")
    assert latest.engine == "local"
    assert latest.model_run_id == second
    assert latest.output == rayline_home / "predictions" / "pred-bin" / f"{second}.parquet"
    out = read_output(latest.output)
    valid = valid_split(spec)
    assert latest.rows == len(out) == len(valid)
    assert list(out.columns) == [*tablesets.binary_frame().columns, "probability", "predicted_label"]
    # exactly the validation rows (label-first table: the split must hash features + label)
    assert sorted(out["x1"]) == sorted(valid["x1"])
    assert out["probability"].between(0, 1).all()
    assert (out["predicted_label"] == (out["probability"] >= 0.5).astype(int)).all()
    assert (out["predicted_label"] == out["clicked"]).mean() > 0.8
    assert siblings(latest.output) == [latest.output.name]
    job = open_registry().get(latest.run_id)
    assert job.kind == "predict" and job.parent_id == second
    assert job.metrics["rows"] == len(valid)
    assert job.params["engine"] == "local"

    # the actor pool (predict.engine: ray) writes the same rows, columns and predictions
    on_ray = spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": "ray"})})
    pooled = predict(on_ray, model="latest", output=str(tmp_path / "pooled.parquet"))
    assert pooled.engine == "ray"
    by_row = ["x1", "x2"]
    # the same parquet types; pandas' read-back dtypes differ only by Ray's Arrow-backed batches
    assert pads.dataset(pooled.output).schema.remove_metadata() == pads.dataset(latest.output).schema.remove_metadata()
    pd.testing.assert_frame_equal(
        read_output(pooled.output).sort_values(by_row).reset_index(drop=True),
        out.sort_values(by_row).reset_index(drop=True),
        check_dtype=False,
    )

    # an explicit run id, another file as input (CSV), an explicit output path, on the actor pool
    other = tablesets.binary_frame(rows=150, seed=9)
    other_path = tablesets.write(other, tmp_path / "other", "fresh", "csv")
    target = tmp_path / "out" / "preds.parquet"
    explicit = predict(on_ray, model=first, input=str(other_path), output=str(target))
    assert explicit.engine == "ray"
    assert explicit.model_run_id == first
    assert explicit.output == target
    out = read_output(target)
    assert explicit.rows == len(out) == 150
    assert list(out.columns) == [*other.columns, "probability", "predicted_label"]
    # the probabilities are the first model's, row for row
    expected = get_family("xgboost").load(open_registry().checkpoint_dir(first)).predict(other)
    merged = other.assign(expected=expected["probability"]).merge(out[["x1", "probability"]], on="x1")
    assert len(merged) == 150
    np.testing.assert_allclose(merged["probability"], merged["expected"], rtol=1e-6)
    assert siblings(target) == ["preds.parquet"]


def test_predict_and_evaluate_multiclass(ray_session: object, tmp_path: Path) -> None:
    source = tablesets.make_table("multiclass", tmp_path / "data", "csv")
    # a feature subset: the unused column `noise` is kept in the output but is not a feature
    spec = tablesets.spec_for("multiclass", source, name="multi", data={"features": ["x1", "x2"]})
    trained = train(spec)

    result = predict(spec, model=trained.run_id)
    out = read_output(result.output)
    valid = valid_split(spec)
    assert result.rows == len(out) == len(valid)
    assert list(out.columns) == ["x1", "x2", "noise", "grade", "probability", "predicted_label", "probabilities"]
    assert sorted(out["x1"]) == sorted(valid["x1"])
    probs = np.stack(out["probabilities"].to_numpy())
    assert probs.shape == (len(out), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["probability"], probs.max(axis=1))
    assert list(out["predicted_label"]) == [tablesets.CLASSES[i] for i in probs.argmax(axis=1)]

    evaluation = evaluate(spec, model=trained.run_id)
    # predictions in process (engine: auto on a small local table) or on the actor pool: same numbers
    on_ray = spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": "ray"})})
    pooled = evaluate(on_ray, model=trained.run_id)
    assert (evaluation.engine, pooled.engine) == ("local", "ray")  # reduced with pandas here, on Ray Data there
    assert pooled.metrics == pytest.approx(evaluation.metrics)
    assert (pooled.rows, pooled.per_class, pooled.confusion) == (
        evaluation.rows,
        evaluation.per_class,
        evaluation.confusion,
    )
    assert evaluation.model_run_id == trained.run_id
    assert evaluation.rows == len(valid)
    # computed on the same rows as training's validation metrics
    assert evaluation.metrics["accuracy"] == pytest.approx(trained.metrics["valid_accuracy"], abs=1e-6)
    assert evaluation.metrics["logloss"] == pytest.approx(trained.metrics["valid_loss"], rel=1e-4)
    assert "auc" not in evaluation.metrics
    assert set(evaluation.per_class) == set(tablesets.CLASSES)
    assert set(evaluation.confusion) == set(tablesets.CLASSES)
    assert sum(sum(row.values()) for row in evaluation.confusion.values()) == len(valid)
    for label, row in evaluation.confusion.items():
        assert set(row) <= set(tablesets.CLASSES)
        assert evaluation.per_class[label] == pytest.approx(row.get(label, 0) / sum(row.values()))
        assert (valid["grade"] == label).sum() == sum(row.values())
    stored = open_registry().get(trained.run_id).metrics
    assert stored["eval_accuracy"] == pytest.approx(evaluation.metrics["accuracy"])
    assert stored["eval_logloss"] == pytest.approx(evaluation.metrics["logloss"])
    assert stored["eval_rows"] == len(valid)
    assert evaluation.stored_as == "evaluation/evaluation.json"

    # another input (--input) is stored beside the spec's evaluation, naming it, never over it
    hard = tmp_path / "hard.parquet"
    valid[valid["grade"] == tablesets.CLASSES[0]].to_parquet(hard)
    other = evaluate(spec, model=trained.run_id, input=str(hard))
    assert other.rows == (valid["grade"] == tablesets.CLASSES[0]).sum()
    assert other.stored_as.startswith("evaluation/hard-") and other.stored_as.endswith(".json")
    registry = open_registry()
    assert registry.get(trained.run_id).metrics == stored  # eval_* still the validation split's
    saved = json.loads(registry.read_text(trained.run_id, other.stored_as) or "{}")
    assert saved["input"] == str(hard) and saved["rows"] == other.rows
    assert saved["metrics"] == pytest.approx(other.metrics)


def test_predict_and_evaluate_regression(ray_session: object, tmp_path: Path) -> None:
    source = tablesets.make_table("regression", tmp_path / "data")
    spec = tablesets.spec_for("regression", source, name="reg")
    trained = train(spec)

    other = tablesets.regression_frame(rows=120, seed=5)
    other_path = tablesets.write(other, tmp_path / "other", "fresh", "csv")
    result = predict(spec, model="best", input=str(other_path), output=str(tmp_path / "out" / "reg.parquet"))
    assert result.model_run_id == trained.run_id
    out = read_output(result.output)
    assert result.rows == len(out) == 120
    assert list(out.columns) == [*other.columns, "prediction"]
    rmse = float(np.sqrt(((out["prediction"] - out["price"]) ** 2).mean()))
    assert rmse < 0.3 * other["price"].std()
    assert siblings(result.output) == ["reg.parquet"]

    evaluation = evaluate(spec)
    assert evaluation.rows == len(valid_split(spec))
    assert set(evaluation.metrics) == {"rmse", "mae"}
    assert evaluation.metrics["rmse"] == pytest.approx(trained.metrics["valid_rmse"], rel=1e-4)
    assert evaluation.metrics["mae"] == pytest.approx(trained.metrics["valid_mae"], rel=1e-4)
    assert evaluation.per_class == {} and evaluation.confusion == {}
    stored = open_registry().get(trained.run_id).metrics
    assert stored["eval_rmse"] == pytest.approx(evaluation.metrics["rmse"])
    assert stored["eval_mae"] == pytest.approx(evaluation.metrics["mae"])


def test_tune_launches_ray_train_per_trial_for_big_data(
    ray_session: object, tmp_path: Path, no_checkpoint_copies_left: None
) -> None:
    """With scaling.num_workers set, each trial is a Ray Train run reporting through Tune; under ASHA
    the trial that trains every round still hands Tune its model (the first runs alone: nothing
    stops it early)."""
    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for(
        "binary",
        source,
        name="tune-train",
        scaling={"num_workers": 1},
        tune={"num_samples": 2, "scheduler": "asha", "max_concurrent": 1, "space": SPACE},
    )
    result = tune(spec)
    assert result.trials == 2
    registry = open_registry()
    trials = registry.list_runs("tune-train", kind="trial")
    assert len(trials) == 2 and sum(t.has_model for t in trials) == 1
    best = registry.resolve("tune-train", "best", metric="valid_loss", mode="min")
    assert best.run_id == result.best_run_id
    assert "valid_loss" in best.metrics
    assert (registry.checkpoint_dir(best.run_id) / "model.ubj").is_file()
    # Registered: the search's state and the trials' Ray Train runs are gone from the storage.
    assert sorted(p.name for p in Path(runtime.storage_path()).iterdir()) == []


def test_binary_evaluation_agrees_between_engines(ray_session: object, tmp_path: Path) -> None:
    """AUC, log loss and the confusion matrix: pandas in this process and Ray Data give the same numbers."""
    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name="bin-eval")
    trained = train(spec)
    local = evaluate(spec, model=trained.run_id)
    on_ray = spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": "ray"})})
    pooled = evaluate(on_ray, model=trained.run_id)
    assert (local.engine, pooled.engine) == ("local", "ray")
    assert set(local.metrics) == {"accuracy", "logloss", "auc"}
    assert pooled.metrics == pytest.approx(local.metrics)
    assert (pooled.rows, pooled.per_class, pooled.confusion) == (local.rows, local.per_class, local.confusion)
    assert local.metrics["auc"] == pytest.approx(trained.metrics["valid_auc"], abs=2e-3)


def test_evaluating_a_small_local_table_does_not_start_ray(tmp_path: Path) -> None:
    """A 200-row CSV is trained, evaluated (and reported) in one fresh process without starting Ray."""
    import subprocess
    import sys

    source = tablesets.make_table("binary", tmp_path / "data", "csv", rows=200)
    script = f"""
import ray, rayline, tablesets
spec = tablesets.spec_for("binary", {str(source)!r}, name="small-eval")
run = rayline.train(spec)
result = rayline.evaluate(spec, model=run.run_id)
print(result.engine, result.rows, ",".join(sorted(result.metrics)), ray.is_initialized())
"""
    tests = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tests, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    engine, rows, metrics, started = done.stdout.strip().splitlines()[-1].split()
    assert engine == "local" and 20 < int(rows) < 80
    assert metrics == "accuracy,auc,logloss" and started == "False"
