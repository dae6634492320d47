"""Run reports: report.html and PNGs from what the registry holds, logged back on the run."""

from __future__ import annotations

from pathlib import Path

import pytest

import tables
from rayline.registry import open_registry
from rayline.stages.evaluate import evaluate
from rayline.stages.report import build_report
from rayline.stages.train import train
from rayline.stages.tune import tune

pytestmark = pytest.mark.slow


def png_names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png")}


def test_binary_table_report(ray_session: object, tmp_path: Path, rayline_home: Path) -> None:
    source = tables.make_table("binary", tmp_path / "data")
    spec = tables.spec_for("binary", source, name="report-bin", train={"report_every": 2})
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
    logged = set(open_registry().artifact_paths(trained.run_id, "report"))
    assert "report/report.html" in logged and "report/roc.png" in logged
    # nothing half-written next to it
    assert sorted(p.name for p in folder.parent.iterdir()) == [trained.run_id]


def test_tune_report_marks_the_best_trial(ray_session: object, tmp_path: Path) -> None:
    source = tables.make_table("regression", tmp_path / "data")
    space = {"max_depth": {"randint": [2, 6]}, "eta": {"uniform": [0.05, 0.5]}}
    spec = tables.spec_for("regression", source, name="report-tune", tune={"num_samples": 3, "space": space})
    result = tune(spec)

    folder = build_report(result.run_id, out=tmp_path / "r")

    assert png_names(folder) == {"tuning_eta.png", "tuning_max_depth.png"}
    assert "tune run" in (folder / "report.html").read_text()
    # a trial's report shows its tune run's search too, and its own curves
    trial = build_report(result.best_run_id, out=tmp_path / "t")
    assert {"tuning_eta.png", "learning_losses.png", "feature_importance.png"} <= png_names(trial)
    assert "roc.png" not in png_names(trial)  # regression: no ROC
