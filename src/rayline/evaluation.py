"""Evaluate a registered model on labelled rows with Ray Data aggregates; store it on the run.

Per-row terms (correct, log loss, squared error) are added on the actor pool's output and
reduced with ``Dataset.mean``; per-class accuracy uses ``groupby(label).map_groups`` (the
course's lesson 4) and the confusion matrix ``groupby([label, predicted_label]).count()``.
AUC is computed from per-batch score histograms (10,000 bins), so nothing is collected row by row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from rayline import local_inference, runtime
from rayline.data import TableLayout
from rayline.errors import DataError
from rayline.inference import (
    _layout,
    _map_error,
    input_dataset,
    predictions,
    require_gpus,
    resolve_model,
    run_pipeline,
)
from rayline.registry import Registry, open_registry
from rayline.spec import Spec

_BINS = 10_000
_EPS = 1e-15


@dataclass
class Evaluation:
    model_run_id: str
    rows: int
    metrics: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


class _RowTerms:
    def __init__(self, layout: TableLayout) -> None:
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
            unknown = truth[index < 0].iloc[0]
            raise DataError(f"label {unknown!r} is not one of the model's classes ({', '.join(map(str, lay.classes))})")
        if lay.task == "binary":
            p1 = batch["probability"].to_numpy(dtype=np.float64)
            p_true = np.where(index == 1, p1, 1.0 - p1)
            out["score"], out["positive"] = p1, (index == 1).astype(np.int8)
        else:
            probs = np.stack(batch["probabilities"].to_numpy())
            p_true = probs[np.arange(len(index)), index]
        out["logloss"] = -np.log(np.clip(p_true, _EPS, 1.0))
        return out


def _histograms(batch: pd.DataFrame) -> pd.DataFrame:
    bins = np.minimum((batch["score"].to_numpy() * _BINS).astype(np.int64), _BINS - 1)
    pos = np.bincount(bins[batch["positive"].to_numpy() == 1], minlength=_BINS)
    neg = np.bincount(bins[batch["positive"].to_numpy() == 0], minlength=_BINS)
    return pd.DataFrame({"pos": [pos.tolist()], "neg": [neg.tolist()]})


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC from score histograms (ties within a bin count one half)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def _class_accuracy(group: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"label": group["label"].iloc[:1], "accuracy": [group["correct"].mean()]})


def _pair_count(group: pd.DataFrame) -> pd.DataFrame:
    first = group.iloc[:1]
    return pd.DataFrame({"label": first["label"], "predicted_label": first["predicted_label"], "count": [len(group)]})


def evaluate(
    spec: Spec, *, model: str = "best", input: str | None = None, registry: Registry | None = None
) -> Evaluation:
    """Metrics of a registered model on labelled rows (default: the validation split)."""
    import ray
    import ray.data
    from ray.data.aggregate import Count, Mean

    start = time.perf_counter()
    require_gpus(spec)
    registry = registry or open_registry()
    record, family, checkpoint = runtime.init_while(partial(resolve_model, spec, model, registry))
    layout = _layout(checkpoint)
    if layout is None:
        raise DataError(f"run {record.run_id}: checkpoint has no table layout to evaluate with")
    source = input or spec.predict.input
    to_terms = _RowTerms(layout)

    def on_pool() -> Any:  # a materialized ray.data.Dataset, built and run inside run_pipeline (see there why)
        ds = input_dataset(spec, family, source, checkpoint, label=layout.label)
        return predictions(spec, family, checkpoint, ds).map_batches(to_terms, batch_format="pandas").materialize()

    def in_process() -> Any:
        # predict.engine picks where the model runs, as for predict; the reductions stay Ray Data's.
        chunks = local_inference.predicted_chunks(spec, family, checkpoint, source, label=layout.label)
        frames = [to_terms(chunk) for chunk in chunks]
        if not frames:
            raise DataError("evaluation input has no rows")
        return ray.data.from_pandas(pd.concat(frames, ignore_index=True)).materialize()

    local = local_inference.wants_local(spec, family, source)
    try:
        terms = run_pipeline(in_process if local else on_pool, spec.predict.timeout_s, "evaluation")
        # Each Ray Data aggregation pass costs seconds of fixed overhead here: one pass for all the
        # means. Group-bys use few partitions: there are at most a few dozen groups, and Ray's
        # default (one per shuffle partition, hundreds) cost ~5 s per group-by on 2 CPUs.
        regression = layout.task == "regression"
        names = ("sq_err", "abs_err") if regression else ("correct", "logloss")
        totals = terms.aggregate(Count(), *(Mean(name) for name in names))
        rows = int(totals["count()"] or 0)
        if rows == 0:
            raise DataError("evaluation input has no rows")
        means = [float(totals[f"mean({name})"]) for name in names]
        metrics: dict[str, float] = {}
        per_class: dict[str, float] = {}
        confusion: dict[str, dict[str, int]] = {}
        if regression:
            metrics["rmse"], metrics["mae"] = float(np.sqrt(means[0])), means[1]
        else:
            metrics["accuracy"], metrics["logloss"] = means
            parts = max(1, min(len(layout.classes), int(ray.cluster_resources().get("CPU", 1))))
            by_label = terms.groupby("label", num_partitions=parts)
            groups = by_label.map_groups(_class_accuracy, batch_format="pandas").to_pandas()
            per_class = {str(r.label): float(r.accuracy) for r in groups.itertuples()}
            pairs = terms.groupby(["label", "predicted_label"], num_partitions=parts)
            for row in pairs.map_groups(_pair_count, batch_format="pandas").take_all():
                confusion.setdefault(str(row["label"]), {})[str(row["predicted_label"])] = int(row["count"])
            if layout.task == "binary":
                hist = terms.map_batches(_histograms, batch_format="pandas").take_all()
                pos = np.sum([h["pos"] for h in hist], axis=0)
                neg = np.sum([h["neg"] for h in hist], axis=0)
                metrics["auc"] = auc_from_histograms(np.asarray(pos), np.asarray(neg))
    except DataError:
        raise
    except Exception as err:
        raise _map_error(err) from err
    result = Evaluation(record.run_id, rows, metrics, per_class, confusion, time.perf_counter() - start)
    _store(registry, record.run_id, result)
    return result


def _store(registry: Registry, run_id: str, result: Evaluation) -> None:
    """Evaluation metrics go on the model's own run as ``eval_*`` (best-run picking ignores them)."""
    values: dict[str, Any] = {f"eval_{k}": v for k, v in result.metrics.items()}
    values["eval_rows"] = result.rows
    payload = {
        "rows": result.rows,
        "metrics": result.metrics,
        "per_class_accuracy": result.per_class,
        "confusion_matrix": result.confusion,
    }
    registry.annotate(run_id, values, {"evaluation/evaluation.json": json.dumps(payload, indent=2)})
