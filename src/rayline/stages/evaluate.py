"""Evaluate a registered model on labelled rows; store the metrics on its run.

Per-row terms (correct, log loss, squared error) are computed next to the predictions, then
reduced. Two engines, the same terms and the same formulas:

- in this process with pandas, for modest local inputs (as ``predict`` chooses), so a small
  table is evaluated without starting Ray;
- on Ray Data otherwise: the terms on the actor pool's output, means with ``Dataset.aggregate``,
  per-class accuracy with ``groupby(label).map_groups`` (the course's lesson 4), the confusion
  matrix with a group-by on (label, predicted_label).

AUC comes from score histograms (10,000 bins) on both engines, so nothing is collected row by row.
A metric the rows cannot define (AUC when only one class is present) is left out of ``metrics``
and named in ``undefined`` with the reason; the stored JSON has it as null.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from rayline import runtime
from rayline.data import Target
from rayline.errors import DataError, RaylineError, map_error
from rayline.registry import Registry, open_registry
from rayline.spec import Spec
from rayline.stages import parts
from rayline.stages.engine import plugs, predicts_in_process
from rayline.stages.predict import (
    local_predictions,
    part_settings,
    pool_over_parts,
    pool_predictions,
    require_gpus,
    resolve_model,
    run_pipeline,
)
from rayline.stages.tally import Tally, metrics_of, unknown_label

_BINS = 10_000
_EPS = 1e-15
# Rows per Arrow batch when evaluating by parts, as the plain script reads them: evaluation keeps
# no output, and xgboost's ``inplace_predict`` took about a quarter more CPU per row on the
# predict path's 65,536-row batches (docs/benchmarks.md, "Where evaluate's time went").
_TALLY_BATCH_ROWS = 262_144


@dataclass
class Evaluation:
    model_run_id: str
    rows: int
    metrics: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    engine: str = "ray"  # "local": reduced in this process; "ray": on Ray Data
    stored_as: str = ""  # the artifact on the model's run that holds this evaluation
    classes: list[str] = field(default_factory=list)  # the model's classes, in its order (none: regression)
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why these rows cannot define it


class RowTerms:
    """Per-row terms of a batch of predictions (a Ray Data batch function; the local engine calls it too)."""

    def __init__(self, layout: Target) -> None:
        self.layout = layout

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        lay = self.layout
        truth = batch[lay.label]
        out = pd.DataFrame({"label": truth.astype(str)})
        if lay.task == "regression":
            err = batch["prediction"].to_numpy(dtype=np.float64) - truth.to_numpy(dtype=np.float64)
            out["sq_err"], out["abs_err"] = err**2, np.abs(err)
            return out
        out["predicted_label"] = batch["predicted_label"].astype(str)
        out["correct"] = (batch["predicted_label"].astype(str) == truth.astype(str)).astype(np.float64)
        index = pd.Categorical(truth, categories=lay.classes).codes
        if (index < 0).any():
            raise unknown_label(truth[index < 0].iloc[0], lay)
        if lay.task == "binary":
            p1 = batch["probability"].to_numpy(dtype=np.float64)
            p_true = np.where(index == 1, p1, 1.0 - p1)
            out["score"], out["positive"] = p1, (index == 1).astype(np.int8)
        else:
            probs = np.stack(batch["probabilities"].to_numpy())
            p_true = probs[np.arange(len(index)), index]
        out["logloss"] = -np.log(np.clip(p_true, _EPS, 1.0))
        return out


def _bins(batch: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    bins = np.minimum((batch["score"].to_numpy() * _BINS).astype(np.int64), _BINS - 1)
    pos = np.bincount(bins[batch["positive"].to_numpy() == 1], minlength=_BINS)
    neg = np.bincount(bins[batch["positive"].to_numpy() == 0], minlength=_BINS)
    return pos, neg


def _histograms(batch: pd.DataFrame) -> pd.DataFrame:
    pos, neg = _bins(batch)
    return pd.DataFrame({"pos": [pos.tolist()], "neg": [neg.tolist()]})


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Mann-Whitney AUC from score histograms (ties within a bin count one half); None when a class has no rows."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def _add_auc(reduced: Reduced, pos: np.ndarray, neg: np.ndarray, layout: Target) -> None:
    """AUC into ``reduced.metrics``, or into ``reduced.undefined`` with the one class the rows hold."""
    auc = auc_from_histograms(pos, neg)
    if auc is not None:
        reduced.metrics["auc"] = auc
    else:
        present = layout.classes[1] if pos.sum() else layout.classes[0]
        reduced.undefined["auc"] = f"one class in the input: {present}"


def _class_accuracy(group: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"label": group["label"].iloc[:1], "accuracy": [group["correct"].mean()]})


def _pair_count(group: pd.DataFrame) -> pd.DataFrame:
    first = group.iloc[:1]
    return pd.DataFrame({"label": first["label"], "predicted_label": first["predicted_label"], "count": [len(group)]})


def _reduce_local(terms: pd.DataFrame, layout: Target) -> tuple[int, Reduced]:
    """The reductions on a pandas frame of terms (the in-process engine)."""
    rows = len(terms)
    if rows == 0:
        raise DataError("evaluation input has no rows")
    if layout.task == "regression":
        return rows, Reduced({"rmse": float(np.sqrt(terms["sq_err"].mean())), "mae": float(terms["abs_err"].mean())})
    metrics = {"accuracy": float(terms["correct"].mean()), "logloss": float(terms["logloss"].mean())}
    per_class = {str(k): float(v) for k, v in terms.groupby("label")["correct"].mean().items()}
    confusion: dict[str, dict[str, int]] = {}
    for (truth, guess), count in terms.groupby(["label", "predicted_label"]).size().items():
        confusion.setdefault(str(truth), {})[str(guess)] = int(count)
    reduced = Reduced(metrics, per_class, confusion)
    if layout.task == "binary":
        _add_auc(reduced, *_bins(terms), layout)
    return rows, reduced


def _reduce_ray(terms: Any, layout: Target) -> tuple[int, Reduced]:
    """The reductions on a materialized Ray Dataset of terms (the Ray engine)."""
    import ray
    from ray.data.aggregate import Count, Mean

    # Each Ray Data aggregation pass has a fixed cost: one pass for all the means. Group-bys use
    # few partitions: there are at most a few dozen groups (Ray's default is one per shuffle
    # partition, hundreds).
    regression = layout.task == "regression"
    names = ("sq_err", "abs_err") if regression else ("correct", "logloss")
    totals = terms.aggregate(Count(), *(Mean(name) for name in names))
    rows = int(totals["count()"] or 0)
    if rows == 0:
        raise DataError("evaluation input has no rows")
    means = [float(totals[f"mean({name})"]) for name in names]
    if regression:
        return rows, Reduced({"rmse": float(np.sqrt(means[0])), "mae": means[1]})
    metrics = {"accuracy": means[0], "logloss": means[1]}
    parts = max(1, min(len(layout.classes), int(ray.cluster_resources().get("CPU", 1))))
    groups = terms.groupby("label", num_partitions=parts).map_groups(_class_accuracy, batch_format="pandas")
    per_class = {str(r.label): float(r.accuracy) for r in groups.to_pandas().itertuples()}
    confusion: dict[str, dict[str, int]] = {}
    pairs = terms.groupby(["label", "predicted_label"], num_partitions=parts)
    for row in pairs.map_groups(_pair_count, batch_format="pandas").take_all():
        confusion.setdefault(str(row["label"]), {})[str(row["predicted_label"])] = int(row["count"])
    reduced = Reduced(metrics, per_class, confusion)
    if layout.task == "binary":
        hist = terms.map_batches(_histograms, batch_format="pandas").take_all()
        pos = np.sum([h["pos"] for h in hist], axis=0)
        neg = np.sum([h["neg"] for h in hist], axis=0)
        _add_auc(reduced, np.asarray(pos), np.asarray(neg), layout)
    return rows, reduced


@dataclass
class Reduced:
    metrics: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Whatever else comes out NaN or infinite (a model predicting NaN) is undefined too:
        # the stored JSON must stay JSON, and NaN compares as neither better nor worse.
        for name, value in list(self.metrics.items()):
            if not math.isfinite(value):
                del self.metrics[name]
                self.undefined.setdefault(name, f"not a finite number ({value})")


def evaluate(
    spec: Spec, *, model: str = "best", input: str | None = None, registry: Registry | None = None
) -> Evaluation:
    """Metrics of a registered model on labelled rows (default: the validation split)."""
    start = time.perf_counter()
    require_gpus(spec)
    registry = registry or open_registry()
    source = input or spec.predict.input
    family, kind = plugs(spec)
    by_parts = parts.supports_parts(kind, family)
    local = predicts_in_process(spec, kind, source, streaming=by_parts)
    m = resolve_model(spec, model, registry, local=local)
    target = m.kind.target(m.meta)
    to_terms = RowTerms(target)

    def tallied(progress: Any = None) -> tuple[int, Reduced]:
        """By parts (tables): each batch reduced as it is predicted, on either engine."""
        plan = m.kind.plan_parts(spec, m.meta, source, label=target.label)  # type: ignore[attr-defined]
        settings = {**part_settings(spec, m, plan, None), "on_bad_row": "fail", "target": target}
        settings["batch_rows"] = max(settings["batch_rows"], _TALLY_BATCH_ROWS)
        total = Tally()
        if local:
            predictor = parts.PartPredictor(checkpoint=str(m.checkpoint), cpus=runtime.local_cpus(), **settings)
            for part in plan:
                total.add(predictor.tally(part.index, target))
        else:
            for row in pool_over_parts(spec, m, [p.index for p in plan], settings, progress):
                total.add(Tally.from_json(row["tally"]))
        if total.rows == 0:
            raise DataError("evaluation input has no rows")
        reduced = Reduced(*metrics_of(total, target))
        if target.task == "binary":
            _add_auc(reduced, total.pos, total.neg, target)
        return total.rows, reduced

    def in_process() -> tuple[int, Reduced]:
        frames = [to_terms(chunk) for chunk in local_predictions(spec, m, source, label=target.label)]
        if not frames:
            raise DataError("evaluation input has no rows")
        return _reduce_local(pd.concat(frames, ignore_index=True), target)

    def on_ray(progress: Any) -> tuple[int, Reduced]:  # the Dataset lives only in this frame (see run_pipeline)
        ds = m.kind.ray_input(spec, m.meta, source, label=target.label)
        terms = pool_predictions(spec, m, ds, progress).map_batches(to_terms, batch_format="pandas").materialize()
        return _reduce_ray(terms, target)

    try:
        if by_parts:
            rows, reduced = run_pipeline(tallied, spec, "evaluation", watched=not local)
        elif local:
            rows, reduced = run_pipeline(in_process, spec, "evaluation")
        else:
            rows, reduced = run_pipeline(on_ray, spec, "evaluation", watched=True)
    except RaylineError:
        raise
    except Exception as err:
        raise map_error(err, during="evaluation") from None
    seconds = time.perf_counter() - start
    result = Evaluation(
        m.record.run_id,
        rows,
        reduced.metrics,
        reduced.per_class,
        reduced.confusion,
        seconds,
        "local" if local else "ray",
        classes=[] if target.task == "regression" else [str(c) for c in target.classes],
        undefined=reduced.undefined,
    )
    result.stored_as = _store(registry, m.record.run_id, result, source, other=input is not None)
    return result


def _store(registry: Registry, run_id: str, result: Evaluation, source: str | None, *, other: bool) -> str:
    """On the model's own run: the spec's evaluation (the validation split, or ``predict.input``)
    as ``eval_*`` metrics (best-run picking ignores them) and ``evaluation/evaluation.json``; an
    ``other`` input's (``--input``) only as ``evaluation/<name>-<hash>.json``, naming the input,
    so it never replaces the spec's."""
    payload: dict[str, Any] = {
        "input": source or "valid split",
        "rows": result.rows,
        "metrics": {**result.metrics, **dict.fromkeys(result.undefined)},  # undefined: null
        "per_class_accuracy": result.per_class,
        "confusion_matrix": result.confusion,
    }
    if result.undefined:
        payload["undefined_metrics"] = result.undefined
    if result.classes:  # the matrix holds only the pairs seen: the classes give it its full shape
        payload["classes"] = result.classes
    values: dict[str, Any] = {}
    name = "evaluation/evaluation.json"
    if not other or source is None:
        values = {f"eval_{k}": v for k, v in result.metrics.items()}
        values["eval_rows"] = result.rows
    else:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", PurePosixPath(source.rstrip("/")).stem)[:60] or "input"
        name = f"evaluation/{stem}-{hashlib.sha256(source.encode()).hexdigest()[:8]}.json"
    registry.annotate(run_id, values, {name: json.dumps(payload, indent=2, allow_nan=False)})
    return name
