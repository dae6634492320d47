"""Evaluation by parts: each batch's per-row terms reduced to sums and counts as they come.

``evaluate`` on an input predicted part by part (tables; ``rayline.stages.parts``) keeps no row:
a ``Tally`` holds the sums (correct, log loss, squared and absolute error), the per-class and
confusion counts and the two score histograms AUC is read from. The pool's actors each return a
tally per part; the driver adds them. The formulas are ``evaluate.RowTerms``'s, in numpy; a
label the model does not know is refused in the same words (``unknown_label``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rayline.data import Target
from rayline.errors import DataError

BINS = 10_000
_EPS = 1e-15


@dataclass
class Tally:
    rows: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # correct, logloss | sq_err, abs_err
    per_class: list[list[int]] = field(default_factory=list)  # class index -> [rows, correct]
    confusion: list[int] = field(default_factory=list)  # truth * classes + predicted -> rows
    pos: list[int] = field(default_factory=list)  # binary: score histograms
    neg: list[int] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.rows += other.rows
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.per_class = _plus(self.per_class, other.per_class)
        self.confusion = _plus(self.confusion, other.confusion)
        self.pos, self.neg = _plus(self.pos, other.pos), _plus(self.neg, other.neg)


def _plus(a: Any, b: Any) -> Any:
    if not len(a):
        return b
    if not len(b):
        return a
    return (np.asarray(a) + np.asarray(b)).tolist()


def tally_batch(truth: pa.Array | pa.ChunkedArray, outputs: dict[str, pa.Array], target: Target) -> Tally:
    """One batch's terms, reduced."""
    n = len(truth)
    if target.task == "regression":
        predicted = np.asarray(outputs["prediction"].to_numpy(zero_copy_only=False), dtype=np.float64)
        err = predicted - np.asarray(truth.to_numpy(zero_copy_only=False), dtype=np.float64)
        return Tally(n, {"sq_err": float((err**2).sum()), "abs_err": float(np.abs(err).sum())})
    k = len(target.classes)
    values = pd.Series(truth.to_numpy(zero_copy_only=False))
    codes = np.asarray(pd.Categorical(values, categories=target.classes).codes, dtype=np.int64)
    if (codes < 0).any():
        raise unknown_label(values[codes < 0].iloc[0], target)
    probability = outputs["probability"].to_numpy(zero_copy_only=False)
    if target.task == "binary":
        predicted = (probability >= 0.5).astype(np.int64)
        p_true = np.where(codes == 1, probability, 1.0 - probability)
    else:
        probs = np.asarray(outputs["probabilities"].flatten().to_numpy(zero_copy_only=False)).reshape(n, k)
        predicted = probs.argmax(axis=1)
        p_true = probs[np.arange(n), codes]
    correct = predicted == codes
    tally = Tally(
        n,
        {"correct": float(correct.sum()), "logloss": float(-np.log(np.clip(p_true, _EPS, 1.0)).sum())},
        np.stack([np.bincount(codes, minlength=k), np.bincount(codes[correct], minlength=k)], axis=1).tolist(),
        np.bincount(codes * k + predicted, minlength=k * k).tolist(),
    )
    if target.task == "binary":
        bins = np.minimum((probability * BINS).astype(np.int64), BINS - 1)
        tally.pos = np.bincount(bins[codes == 1], minlength=BINS).tolist()
        tally.neg = np.bincount(bins[codes == 0], minlength=BINS).tolist()
    return tally


def unknown_label(unknown: Any, target: Target) -> DataError:
    """The error for a label value that is missing or none of the model's classes."""
    if pd.isna(unknown):
        return DataError(f"label column {target.label!r} has missing values", hint="drop those rows or fill them in")
    value = unknown.item() if isinstance(unknown, np.generic) else unknown
    classes = ", ".join(repr(c.item() if isinstance(c, np.generic) else c) for c in target.classes)
    kinds = {type(c.item() if isinstance(c, np.generic) else c).__name__ for c in target.classes}
    return DataError(
        f"label {value!r} ({type(value).__name__}) is not one of the model's classes "
        f"({classes}: {'/'.join(sorted(kinds))})"
    )


def metrics_of(tally: Tally, target: Target) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, int]]]:
    """(metrics, per-class accuracy, confusion) of a whole input's tally; the classes the rows
    hold only, as ``evaluate``'s group-bys give them."""
    n = tally.rows
    if target.task == "regression":
        return {"rmse": float(np.sqrt(tally.sums["sq_err"] / n)), "mae": tally.sums["abs_err"] / n}, {}, {}
    metrics = {"accuracy": tally.sums["correct"] / n, "logloss": tally.sums["logloss"] / n}
    names = [str(c) for c in target.classes]
    per_class = {names[i]: c / r for i, (r, c) in enumerate(tally.per_class) if r}
    confusion: dict[str, dict[str, int]] = {}
    k = len(names)
    for cell, count in enumerate(tally.confusion):
        if count:
            confusion.setdefault(names[cell // k], {})[names[cell % k]] = int(count)
    return metrics, per_class, confusion
