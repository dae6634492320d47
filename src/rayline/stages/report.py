"""A run's report: ``report.html`` and matplotlib PNGs, kept under RAYLINE_HOME and on the run.

What it shows depends on what the registry holds for the run:

- learning curves: every metric logged per round/epoch;
- tuning: each searched parameter against the spec's metric over the trials, best marked
  (for a tune run, or a trial of one);
- evaluation (after ``rayline evaluate``): confusion matrix and per-class accuracy;
- the family's feature importance, where it has one; for binary classifiers also ROC and
  calibration on the validation split, when it is local and modest.

The files are written to a temporary folder, renamed into place, and logged as the run's
``report/`` artifacts, so ``mlflow ui`` shows them too.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline import runtime
from rayline.atomic import atomic_output
from rayline.families import get_family
from rayline.registry import Registry, RunRecord, open_registry
from rayline.spec import Spec
from rayline.stages.engine import predicts_in_process
from rayline.stages.predict import Model, local_predictions, model_of

PlotFn = Callable[[Any], None]


def _figure(folder: Path, name: str, draw: PlotFn, size: tuple[float, float] = (6.0, 4.0)) -> str:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
    finally:
        plt.close(fig)
    return name


def _history(registry: Registry, run_id: str, names: list[str]) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for name in names:
        points = registry.metric_history(run_id, name)
        if len(points) > 1:
            out[name] = points
    return out


def _learning_curves(folder: Path, record: RunRecord, registry: Registry) -> list[str]:
    curves = _history(registry, record.run_id, [k for k in record.metrics if not k.startswith(("time_", "eval_"))])
    step = get_family(record.family).step_key
    groups = {
        "losses": [k for k in curves if k.endswith("loss") or k in ("valid_rmse", "valid_mae")],
        "scores": [k for k in curves if k.endswith(("accuracy", "auc"))],
    }
    images = []
    for title, keys in groups.items():
        if not keys:
            continue

        def draw(ax: Any, keys: list[str] = keys, title: str = title) -> None:
            for key in keys:
                xs, ys = zip(*curves[key], strict=True)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=key)
            ax.set_xlabel(step)
            ax.set_title(f"learning curve: {title}")
            ax.legend()
            ax.grid(alpha=0.3)

        images.append(_figure(folder, f"learning_{title}.png", draw))
    return images


def _tuning(folder: Path, record: RunRecord, registry: Registry, metric: str) -> list[str]:
    tune_id = record.run_id if record.kind == "tune" else record.parent_id if record.kind == "trial" else None
    if tune_id is None:
        return []
    tune_run = registry.get(tune_id)
    trials = [t for t in registry.list_runs(tune_run.experiment, kind="trial") if t.parent_id == tune_id]
    best = tune_run.tags.get("rayline.best_trial_run")
    names = sorted({k.removeprefix("trial.") for t in trials for k in t.params if k.startswith("trial.")})
    images = []
    for name in names:
        points = [
            (float(t.params[f"trial.{name}"]), t.metrics[metric], t.run_id == best)
            for t in trials
            if f"trial.{name}" in t.params and metric in t.metrics and _is_number(t.params[f"trial.{name}"])
        ]
        if not points:
            continue

        def draw(ax: Any, points: list[tuple[float, float, bool]] = points, name: str = name) -> None:
            ax.scatter([p[0] for p in points], [p[1] for p in points], label="trial")
            ax.scatter([p[0] for p in points if p[2]], [p[1] for p in points if p[2]], s=160, marker="*", label="best")
            ax.set_xlabel(name)
            ax.set_ylabel(metric)
            ax.set_title(f"tuning: {name} vs {metric} ({len(points)} trials)")
            ax.legend()
            ax.grid(alpha=0.3)

        images.append(_figure(folder, f"tuning_{name}.png", draw))
    return images


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _evaluation(folder: Path, evaluation: dict[str, Any]) -> list[str]:
    confusion: dict[str, dict[str, int]] = evaluation.get("confusion_matrix") or {}
    per_class: dict[str, float] = evaluation.get("per_class_accuracy") or {}
    images = []
    if confusion:
        labels = sorted(set(confusion) | {p for row in confusion.values() for p in row})
        matrix = np.array([[confusion.get(t, {}).get(p, 0) for p in labels] for t in labels])

        def draw_confusion(ax: Any) -> None:
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=45)
            ax.set_yticks(range(len(labels)), labels)
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title("confusion matrix")

        images.append(_figure(folder, "confusion_matrix.png", draw_confusion, (6.0, 5.5)))
    if per_class:

        def draw_per_class(ax: Any) -> None:
            keys = sorted(per_class)
            ax.bar(keys, [per_class[k] for k in keys])
            ax.set_ylim(0, 1)
            ax.set_ylabel("accuracy")
            ax.set_title("per-class accuracy")

        images.append(_figure(folder, "per_class_accuracy.png", draw_per_class))
    return images


def _importance(folder: Path, model: Model) -> list[str]:
    gain = model.family.importance(model.checkpoint)
    if not gain:
        return []
    names = sorted(gain, key=lambda n: gain[n])

    def draw_importance(ax: Any) -> None:
        ax.barh(names, [gain[n] for n in names])
        ax.set_xlabel("gain")
        ax.set_title("feature importance")

    return [_figure(folder, "feature_importance.png", draw_importance)]


def _binary_curves(folder: Path, model: Model, spec: Spec | None) -> list[str]:
    """ROC and calibration of a binary classifier on the validation split (modest local data only)."""
    target = model.kind.target(model.meta)
    if spec is None or target.task != "binary" or not predicts_in_process(spec, model.kind, None):
        return []  # a remote or huge table: the evaluation metrics stand in for the curves
    valid = pd.concat(list(local_predictions(spec, model, None, label=target.label)), ignore_index=True)
    scores = valid["probability"].to_numpy(dtype=np.float64)
    truth = (np.asarray(valid[target.label]) == target.classes[1]).astype(int)
    order = np.argsort(-scores)
    tpr = np.concatenate([[0.0], np.cumsum(truth[order]) / max(truth.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - truth[order]) / max((1 - truth).sum(), 1)])
    auc = float(np.trapezoid(tpr, fpr))

    def draw_roc(ax: Any) -> None:
        ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC (validation split)")
        ax.legend()

    bins = np.minimum((scores * 10).astype(int), 9)
    filled = [b for b in range(10) if (bins == b).any()]
    mean_score = [scores[bins == b].mean() for b in filled]
    observed = [truth[bins == b].mean() for b in filled]

    def draw_calibration(ax: Any) -> None:
        ax.plot(mean_score, observed, marker="o", label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed positive rate")
        ax.set_title("calibration (validation split, 10 bins)")
        ax.legend()

    return [_figure(folder, "roc.png", draw_roc), _figure(folder, "calibration.png", draw_calibration)]


def _html(record: RunRecord, images: list[str], evaluation: dict[str, Any] | None) -> str:
    def rows(values: dict[str, Any]) -> str:
        return "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in values.items()
        )

    metrics = {k: f"{v:.6g}" for k, v in sorted(record.metrics.items())}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>rayline report {record.run_id}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 8px}"
        "img{max-width:100%;margin:1em 0}</style></head><body>",
        f"<h1>{html.escape(record.experiment)}: {html.escape(record.kind)} run {record.run_id}</h1>",
        f"<p>family {html.escape(record.family)}, status {record.status}</p>",
        "<h2>Metrics</h2><table>" + rows(metrics) + "</table>",
        "<h2>Parameters</h2><table>" + rows(dict(sorted(record.params.items()))) + "</table>",
    ]
    if evaluation:
        parts.append(f"<h2>Evaluation</h2><p>{evaluation.get('rows', 0):,} rows</p><table>")
        parts.append(rows({k: f"{v:.4f}" for k, v in evaluation.get("metrics", {}).items()}) + "</table>")
    parts.append("<h2>Plots</h2>")
    parts.extend(f"<div><img src='{name}' alt='{name}'></div>" for name in images)
    if not images:
        parts.append("<p>nothing to plot for this run yet</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(run_id: str, *, registry: Registry | None = None, out: Path | None = None) -> Path:
    """Write the run's report folder (``report.html`` + PNGs), log it on the run, return the folder."""
    registry = registry or open_registry()
    record = registry.get(run_id)
    text = registry.read_text(record.run_id, "spec.yaml")
    spec = None
    if text:
        import yaml

        spec = Spec.model_validate(yaml.safe_load(text))
    evaluation_text = registry.read_text(record.run_id, "evaluation/evaluation.json")
    evaluation = json.loads(evaluation_text) if evaluation_text else None
    metric = spec.metric if spec is not None else "valid_loss"
    target = out or runtime.home() / "reports" / record.run_id
    with atomic_output(target, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        images = _learning_curves(tmp, record, registry)
        images += _tuning(tmp, record, registry, metric)
        if evaluation:
            images += _evaluation(tmp, evaluation)
        if record.has_model:
            model = model_of(record, registry)
            images += _importance(tmp, model)
            images += _binary_curves(tmp, model, spec)
        (tmp / "report.html").write_text(_html(record, images, evaluation))
    registry.log_folder(record.run_id, target, "report")
    return target
