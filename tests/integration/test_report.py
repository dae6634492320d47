"""Run reports: report.html and PNGs from what the registry holds, logged back on the run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tablesets
from rayline.families import Explainer, get_family
from rayline.registry import open_registry
from rayline.stages.evaluate import evaluate
from rayline.stages.predict import local_predictions, model_of
from rayline.stages.report import build_report
from rayline.stages.train import train
from rayline.stages.tune import tune

pytestmark = pytest.mark.slow


def png_names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png")}


def drawn(folder: Path) -> dict[str, Any]:
    """report.json: what each figure's axes hold, by file name, and the explanation's numbers."""
    manifest = json.loads((folder / "report.json").read_text())
    return {"figures": {d["file"]: d for d in manifest["figures"]}, "explanation": manifest["explanation"]}


def curve_keys(figure: dict[str, Any]) -> list[str]:
    return [label.split(" ")[0] for label in figure["lines"]]  # "valid_loss (= valid_logloss)" -> valid_loss


def test_binary_table_report(ray_session: object, tmp_path: Path, rayline_home: Path) -> None:
    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name="report-bin", train={"report_every": 2})
    trained = train(spec)
    evaluate(spec, model=trained.run_id)

    folder = build_report(trained.run_id)

    assert folder == rayline_home / "reports" / trained.run_id
    assert {
        "learning_losses.png",
        "learning_scores.png",
        "feature_importance.png",
        "roc.png",
        "calibration.png",
        "confusion_matrix.png",
        "per_class_accuracy.png",
    } <= png_names(folder)
    page = (folder / "report.html").read_text()
    for name in png_names(folder):
        assert f"src='{name}'" in page
    assert trained.run_id in page and "valid_auc" in page
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5_000
    logged = {a.path for a in open_registry().client.list_artifacts(trained.run_id, "report")}
    assert "report/report.html" in logged and "report/roc.png" in logged
    # nothing half-written next to it
    assert sorted(p.name for p in folder.parent.iterdir()) == [trained.run_id]

    # learning curves: train beside valid, each quantity once (aliases named, not drawn again)
    assert json.loads((folder / "report.json").read_text())["notes"] == []
    figures = drawn(folder)["figures"]
    losses, scores = curve_keys(figures["learning_losses.png"]), curve_keys(figures["learning_scores.png"])
    assert {"train_loss", "valid_loss"} <= set(losses) and {"train_accuracy", "valid_accuracy"} <= set(scores)
    assert "valid_logloss" not in losses  # the same values as valid_loss: named in its legend entry instead
    assert any("valid_logloss" in label for label in figures["learning_losses.png"]["lines"])
    registry = open_registry()
    for keys in (losses, scores):
        histories = {k: registry.metric_history(trained.run_id, k) for k in keys}
        assert all(len(h) > 2 for h in histories.values())
        for a, b in itertools.combinations(keys, 2):
            assert histories[a] != histories[b], f"{a} and {b} are the same line"


def test_a_run_without_curves_says_why(ray_session: object, tmp_path: Path) -> None:
    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name="report-flat", train={"report_every": 1000})
    folder = build_report(train(spec).run_id)

    assert not any(name.startswith("learning_") for name in png_names(folder))
    (note,) = json.loads((folder / "report.json").read_text())["notes"]
    assert note.startswith("No learning curves") and "(this spec: 1000)" in note
    assert note in (folder / "report.html").read_text()


def test_tune_report_marks_the_best_trial(ray_session: object, tmp_path: Path) -> None:
    source = tablesets.make_table("regression", tmp_path / "data")
    space = {"max_depth": {"randint": [2, 6]}, "eta": {"loguniform": [0.05, 0.5]}}
    spec = tablesets.spec_for("regression", source, name="report-tune", tune={"num_samples": 3, "space": space})
    result = tune(spec)

    folder = build_report(result.run_id, out=tmp_path / "r")

    assert png_names(folder) == {"tuning_eta.png", "tuning_max_depth.png"}
    assert "tune run" in (folder / "report.html").read_text()
    figures = drawn(folder)["figures"]  # eta is searched log-uniformly, max_depth is not
    assert figures["tuning_eta.png"]["xscale"] == "log" and figures["tuning_max_depth.png"]["xscale"] == "linear"
    assert figures["tuning_eta.png"]["points"] == 3 + 1  # the trials, and the best again as a star
    # a trial's report shows its tune run's search too, and its own curves
    trial = build_report(result.best_run_id, out=tmp_path / "t")
    assert {"tuning_eta.png", "learning_losses.png", "feature_importance.png"} <= png_names(trial)
    assert "roc.png" not in png_names(trial)  # regression: no ROC


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_report_explains_a_tree_model(ray_session: object, tmp_path: Path, family: str) -> None:
    source = tablesets.make_table("binary", tmp_path / "data")
    model = {"family": family, "num_boost_round": 20, "early_stopping_rounds": None, "params": {}}
    spec = tablesets.spec_for("binary", source, name=f"report-explain-{family}", model=model)
    trained = train(spec)
    registry = open_registry()
    record = registry.get(trained.run_id)
    predictor = get_family(family).load(registry.checkpoint_dir(trained.run_id))
    if not isinstance(predictor, Explainer):
        pytest.skip(f"the {family} predictor does not explain yet")

    folder = build_report(trained.run_id, out=tmp_path / "r")

    # what the report must show: mean |contribution| over the validation rows (fewer than 2,000)
    valid = pd.concat(list(local_predictions(spec, model_of(record, registry), None, label="clicked")))
    expected = predictor.explain(valid).drop(columns=["bias", "margin"]).abs().mean()
    report = drawn(folder)
    explanation = report["explanation"]
    assert explanation["rows"] == len(valid)
    assert set(explanation["mean_abs_contribution"]) == {"x1", "x2", "count", "color"}
    for name, value in explanation["mean_abs_contribution"].items():
        assert value == pytest.approx(float(expected[name]), rel=1e-6)
    assert list(explanation["mean_abs_contribution"].values()) == pytest.approx(sorted(expected, reverse=True))
    assert report["figures"]["explanation_importance.png"]["bars"] == 4  # one bar per feature
    assert report["figures"]["explanation_beeswarm.png"]["points"] == 4 * len(valid)  # a dot per row and feature
    page = (folder / "report.html").read_text()
    assert "<h2>Explanations</h2>" in page and "src='explanation_beeswarm.png'" in page
    for name, value in explanation["mean_abs_contribution"].items():
        assert f"<td>{name}</td><td>{value:.6g}</td>" in page
