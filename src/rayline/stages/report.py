"""A run's report: ``report.html`` and matplotlib PNGs, kept under RAYLINE_HOME and on the run.

What it shows depends on what the registry holds for the run:

- learning curves: each quantity logged per round/epoch, on the validation split and (where the
  family reports it) the training split, drawn once however many names it was logged under;
- tuning: each searched parameter against the spec's metric over the trials, best marked, on a
  log axis where the search space is ``loguniform`` (for a tune run, or a trial of one);
- evaluation (after ``rayline evaluate``): confusion matrix and per-class accuracy;
- the family's feature importance, where it has one; on the validation split, when it is local
  and modest: ROC and calibration of a binary classifier, and, where the predictor is an
  ``Explainer``, the mean |contribution| per feature and a beeswarm of the contributions.

The files are written to a temporary folder, renamed into place, and logged as the run's
``report/`` artifacts, so ``mlflow ui`` shows them too. ``report.json`` says what each figure
drew (title, axes and their scales, line labels, bar and point counts) and the explanation's
numbers, so tools and tests can check a plot without reading its pixels.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline import runtime
from rayline.atomic import atomic_output
from rayline.data import Target
from rayline.families import Explainer, get_family
from rayline.registry import Registry, RunRecord, open_registry
from rayline.spec import Spec
from rayline.stages.engine import predicts_in_process
from rayline.stages.predict import ResolvedModel, local_predictions, model_of
from rayline.stages.report_plots import Drawn, explanations, figure

History = list[tuple[int, float]]

SPLITS = ("train_", "valid_")  # learning curves: the split a metric was measured on, by prefix


def _curves(registry: Registry, record: RunRecord) -> dict[str, History]:
    """Per-step histories of the run's metrics, the training split's counterparts included.

    A run's final values land one step after its history (``registry.ActiveRun.log_metrics``):
    that point is the run's summary (the best round's), not a later step, so it is left off the
    curves (the metrics table shows it). A metric logged only as a final value marks that step.
    """
    names = [k for k in record.metrics if not k.startswith("eval_")]
    names += [f"train_{k.removeprefix('valid_')}" for k in names if k.startswith("valid_")]
    histories = {name: registry.metric_history(record.run_id, name) for name in dict.fromkeys(names)}
    finals = {points[0][0] for points in histories.values() if len(points) == 1}
    final = max(finals) if finals else None
    out = {}
    for name, points in histories.items():
        if points and points[-1][0] == final and len(points) > 1:
            points = points[:-1]
        if len(points) > 1 and not name.startswith("time_"):
            out[name] = points
    return out


def _distinct(curves: dict[str, History]) -> dict[str, list[str]]:
    """Each quantity once: a curve -> the other names of the same split logged with the same values.

    Families log some quantities under two names on purpose (``valid_loss`` is the log loss or
    RMSE again, so a spec's ``metric: valid_loss`` means the same for every family); drawn
    apart they are one line over another. The cross-family name (``*_loss``, ``*_accuracy``) is
    kept. Train and validation curves are never merged, however alike.
    """

    def rank(key: str) -> tuple[bool, str]:
        return (not key.endswith(("_loss", "_accuracy")), key)

    kept: dict[str, list[str]] = {}
    for key in sorted(curves, key=rank):
        twin = next((k for k in kept if _split(k) == _split(key) and curves[k] == curves[key]), None)
        if twin is None:
            kept[key] = []
        else:
            kept[twin].append(key)
    return kept


def _quantity(key: str) -> str:
    """What a metric measures, whichever split: ``train_loss`` and ``valid_loss`` -> ``loss``."""
    return key.removeprefix("train_").removeprefix("valid_")


def _split(key: str) -> str:
    return next((prefix for prefix in SPLITS if key.startswith(prefix)), "")


def _learning_curves(folder: Path, record: RunRecord, registry: Registry) -> list[Drawn]:
    curves = _curves(registry, record)
    kept = _distinct(curves)
    step = get_family(record.family).step_key
    ordered = sorted(kept, key=lambda k: (_quantity(k), k))  # train_x beside valid_x in the legend
    groups = {
        "losses": [k for k in ordered if k.endswith("loss") or _quantity(k) in ("rmse", "mae")],
        "scores": [k for k in ordered if k.endswith(("accuracy", "auc"))],
    }
    figures = []
    for title, keys in groups.items():
        if not keys:
            continue
        # One colour per quantity, one line style per split: train and validation read as a pair.
        colours = {q: f"C{i}" for i, q in enumerate(dict.fromkeys(_quantity(k) for k in keys))}

        def draw(ax: Any, keys: list[str] = keys, title: str = title, colours: dict[str, str] = colours) -> None:
            for key in keys:
                xs, ys = zip(*curves[key], strict=True)
                label = key + (f" (= {', '.join(kept[key])})" if kept[key] else "")
                style = "--" if key.startswith("train_") else "-"
                ax.plot(xs, ys, style, color=colours[_quantity(key)], marker="o" if len(xs) < 30 else None, label=label)
            _finish(ax, xlabel=step, title=f"learning curve: {title}", grid=True)

        figures.append(figure(folder, f"learning_{title}.png", draw))
    return figures


def _finish(ax: Any, *, grid: bool = False, **labels: str) -> None:
    """What every curve and scatter ends with: its labels and title, the legend (and a faint grid)."""
    ax.set(**labels)
    ax.legend()
    if grid:
        ax.grid(alpha=0.3)


def _log_scaled(spec: Spec | None) -> set[str]:
    """Searched parameters drawn on a log axis: those the spec samples log-uniformly."""
    space = spec.tune.space if spec is not None else {}
    return {name for name, domain in space.items() if domain.loguniform is not None}


def _tuning(folder: Path, record: RunRecord, registry: Registry, metric: str, spec: Spec | None) -> list[Drawn]:
    tune_id = record.run_id if record.kind == "tune" else record.parent_id if record.kind == "trial" else None
    if tune_id is None:
        return []
    tune_run = registry.get(tune_id)
    trials = [t for t in registry.list_runs(tune_run.experiment, kind="trial") if t.parent_id == tune_id]
    best = tune_run.tags.get("rayline.best_trial_run")
    names = sorted({k.removeprefix("trial.") for t in trials for k in t.params if k.startswith("trial.")})
    log_scaled = _log_scaled(spec)
    figures = []
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
            if name in log_scaled:
                ax.set_xscale("log")  # sampled log-uniformly: a linear axis crowds the small values
            _finish(
                ax,
                xlabel=name + (" (log scale)" if name in log_scaled else ""),
                ylabel=metric,
                title=f"tuning: {name} vs {metric} ({len(points)} trials)",
                grid=True,
            )

        figures.append(figure(folder, f"tuning_{name}.png", draw))
    return figures


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _evaluation(folder: Path, evaluation: dict[str, Any]) -> list[Drawn]:
    confusion: dict[str, dict[str, int]] = evaluation.get("confusion_matrix") or {}
    per_class: dict[str, float] = evaluation.get("per_class_accuracy") or {}
    figures = []
    if confusion:
        seen = set(confusion) | {p for row in confusion.values() for p in row}
        # The model's classes, where stored: the matrix holds only the pairs the rows had.
        labels = list(evaluation.get("classes") or []) or sorted(seen)
        labels += sorted(seen - set(labels))
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

        figures.append(figure(folder, "confusion_matrix.png", draw_confusion, (6.0, 5.5)))
    if per_class:

        def draw_per_class(ax: Any) -> None:
            keys = sorted(per_class)
            ax.bar(keys, [per_class[k] for k in keys])
            ax.set_ylim(0, 1)
            ax.set_ylabel("accuracy")
            ax.set_title("per-class accuracy")

        figures.append(figure(folder, "per_class_accuracy.png", draw_per_class))
    return figures


def _importance(folder: Path, model: ResolvedModel) -> list[Drawn]:
    gain = model.family.importance(model.checkpoint)
    if not gain:
        return []
    names = sorted(gain, key=lambda n: gain[n])

    def draw_importance(ax: Any) -> None:
        ax.barh(names, [gain[n] for n in names])
        ax.set_xlabel("gain")
        ax.set_title("feature importance")

    return [figure(folder, "feature_importance.png", draw_importance)]


def _validation(spec: Spec | None, model: ResolvedModel) -> pd.DataFrame | None:
    """The validation split with the model's predictions, when it is local and modest.

    None for a remote or huge input: the evaluation metrics stand in for the plots drawn from it.
    """
    if spec is None or not predicts_in_process(spec, model.kind, None):
        return None
    label = model.kind.target(model.meta).label
    return pd.concat(list(local_predictions(spec, model, None, label=label)), ignore_index=True)


def _binary_curves(folder: Path, valid: pd.DataFrame, target: Target) -> list[Drawn]:
    """ROC and calibration of a binary classifier on the validation split."""
    scores = valid["probability"].to_numpy(dtype=np.float64)
    truth = (np.asarray(valid[target.label]) == target.classes[1]).astype(int)
    order = np.argsort(-scores)
    tpr = np.concatenate([[0.0], np.cumsum(truth[order]) / max(truth.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - truth[order]) / max((1 - truth).sum(), 1)])
    auc = float(np.trapezoid(tpr, fpr))

    def draw_roc(ax: Any) -> None:
        ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        _finish(ax, xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation split)")

    bins = np.minimum((scores * 10).astype(int), 9)
    filled = [b for b in range(10) if (bins == b).any()]
    mean_score = [scores[bins == b].mean() for b in filled]
    observed = [truth[bins == b].mean() for b in filled]

    def draw_calibration(ax: Any) -> None:
        ax.plot(mean_score, observed, marker="o", label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
        _finish(
            ax,
            xlabel="mean predicted probability",
            ylabel="observed positive rate",
            title="calibration (validation split, 10 bins)",
        )

    return [figure(folder, "roc.png", draw_roc), figure(folder, "calibration.png", draw_calibration)]


def _explainer(model: ResolvedModel) -> Explainer | None:
    predictor = model.family.load(model.checkpoint, cpus=runtime.local_cpus())
    return predictor if isinstance(predictor, Explainer) else None


def _no_curves(spec: Spec | None) -> str:
    every = f" (this spec: {spec.train.report_every})" if spec is not None else ""
    return (
        "No learning curves: the run reported its metrics fewer than twice. A tree model reports every "
        f"train.report_every rounds{every}, an image model once per epoch."
    )


def _html(
    record: RunRecord,
    images: list[str],
    evaluation: dict[str, Any] | None,
    explanation: dict[str, Any] | None,
    notes: list[str] | None = None,
) -> str:
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
        why = evaluation.get("undefined_metrics", {})
        shown = {
            k: f"{v:.4f}" if v is not None else f"n/a ({why.get(k, 'undefined')})"
            for k, v in evaluation.get("metrics", {}).items()
        }
        parts.append(rows(shown) + "</table>")
    if explanation:
        parts.append(
            f"<h2>Explanations</h2><p>TreeSHAP contributions on {explanation['rows']:,} validation rows: "
            "mean |contribution| per feature</p><table>"
        )
        parts.append(rows({k: f"{v:.6g}" for k, v in explanation["mean_abs_contribution"].items()}) + "</table>")
        parts.extend(f"<div><img src='{name}' alt='{name}'></div>" for name in explanation["figures"])
    parts.append("<h2>Plots</h2>")
    parts.extend(f"<p>{html.escape(note)}</p>" for note in notes or [])
    parts.extend(f"<div><img src='{name}' alt='{name}'></div>" for name in images)
    if not images:
        parts.append("<p>nothing to plot for this run yet</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(run_id: str, *, registry: Registry | None = None, out: Path | None = None) -> Path:
    """Write the run's report folder (``report.html``, PNGs, ``report.json``), log it on the run, return the folder."""
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
    with atomic_output(target, own=("*.html", "*.png", "*.json")) as tmp:
        tmp.mkdir(parents=True)
        figures = _learning_curves(tmp, record, registry)
        notes = [] if figures or record.kind not in ("train", "trial") else [_no_curves(spec)]
        figures += _tuning(tmp, record, registry, metric, spec)
        if evaluation:
            figures += _evaluation(tmp, evaluation)
        explanation: dict[str, Any] | None = None
        drawn: list[Drawn] = []
        if record.has_model:
            model = model_of(record, registry)
            figures += _importance(tmp, model)
            truth = model.kind.target(model.meta)
            explainer = _explainer(model)
            # Read only when a plot needs it: the validation split, predicted, in this process.
            valid = _validation(spec, model) if truth.task == "binary" or explainer is not None else None
            if valid is not None and truth.task == "binary":
                figures += _binary_curves(tmp, valid, truth)
            if valid is not None and explainer is not None:
                explanation, drawn = explanations(tmp, explainer, valid, truth.task)
        images = [d["file"] for d in figures]  # the explanation's figures go in its own section
        (tmp / "report.html").write_text(_html(record, images, evaluation, explanation, notes))
        manifest = {"run_id": record.run_id, "figures": figures + drawn, "explanation": explanation, "notes": notes}
        (tmp / "report.json").write_text(json.dumps(manifest, indent=2))
    registry.log_folder(record.run_id, target, "report")
    return target
