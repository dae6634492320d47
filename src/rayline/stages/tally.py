"""Evaluation by parts: each batch's per-row terms reduced to sums and counts as they come.

``evaluate`` on an input predicted part by part (tables; ``rayline.stages.parts``) keeps no row:
a ``Tally`` holds the sums (log loss | squared and absolute error), the confusion counts (which
give accuracy and per-class accuracy) and the two score histograms AUC is read from, as numpy
arrays added in place. The pool's actors each return a part's tally as JSON; the driver adds
them. The formulas are ``evaluate.RowTerms``'s, in numpy, on the model's raw predictions (no
output column is built); a label the model does not know is refused in the same words
(``unknown_label``).

This is evaluation's hot path (docs/benchmarks.md, "Where evaluate's time went"): per batch, the
labels' class codes in one Arrow pass (no pandas), one ``np.bincount`` for the confusion matrix
and one for both histograms, as the plain script does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rayline.data import Target
from rayline.errors import DataError

BINS = 10_000
_EPS = 1e-15


def _no_counts() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class Tally:
    rows: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # logloss | sq_err, abs_err
    confusion: np.ndarray = field(default_factory=_no_counts)  # truth * classes + predicted -> rows
    histograms: np.ndarray = field(default_factory=_no_counts)  # binary: truth * BINS + score bin -> rows

    def add(self, other: Tally) -> None:
        self.rows += other.rows
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.confusion = _plus(self.confusion, other.confusion)
        self.histograms = _plus(self.histograms, other.histograms)

    def to_json(self) -> str:
        """A pool actor's answer (floats as ``repr`` writes them: they read back exactly)."""
        counts = {"confusion": self.confusion.tolist(), "histograms": self.histograms.tolist()}
        return json.dumps({"rows": self.rows, "sums": self.sums, **counts})

    @classmethod
    def from_json(cls, text: str) -> Tally:
        got = json.loads(text)
        confusion, histograms = (np.asarray(got[k], dtype=np.int64) for k in ("confusion", "histograms"))
        return cls(got["rows"], got["sums"], confusion, histograms)

    @property
    def pos(self) -> np.ndarray:
        """The positive class's score histogram (binary)."""
        return self.histograms[BINS:]

    @property
    def neg(self) -> np.ndarray:
        return self.histograms[:BINS]


def _plus(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    """``total + more``, in place once ``total`` holds counts (a batch's arrays are not kept)."""
    if not more.size:
        return total
    if not total.size:
        return more.copy()
    total += more
    return total


def tally_batch(truth: pa.Array | pa.ChunkedArray, raw: np.ndarray, target: Target) -> Tally:
    """One batch's terms, reduced; ``raw``: the model's float64 predictions of its rows (the
    second class's probability, every class's, or the value: ``TreePredictor.raw_arrow``)."""
    n = len(truth)
    if target.task == "regression":
        err = raw.reshape(-1) - np.asarray(truth.to_numpy(zero_copy_only=False), dtype=np.float64)
        return Tally(n, {"sq_err": float((err**2).sum()), "abs_err": float(np.abs(err).sum())})
    k = len(target.classes)
    codes = label_codes(truth, target)
    if (codes < 0).any():
        raise unknown_label(truth.to_numpy(zero_copy_only=False)[np.flatnonzero(codes < 0)[0]], target)
    if target.task == "binary":
        probability = raw.reshape(-1)
        predicted = (probability >= 0.5).astype(np.int64)
        p_true = np.where(codes == 1, probability, 1.0 - probability)
    else:
        probs = raw.reshape(n, k)
        predicted = probs.argmax(axis=1)
        p_true = probs[np.arange(n), codes]
    logloss = float(-np.log(np.clip(p_true, _EPS, 1.0)).sum())
    tally = Tally(n, {"logloss": logloss}, np.bincount(codes * k + predicted, minlength=k * k))
    if target.task == "binary":
        bins = np.minimum((probability * BINS).astype(np.int64), BINS - 1)
        tally.histograms = np.bincount(codes * BINS + bins, minlength=2 * BINS)
    return tally


def label_codes(truth: pa.Array | pa.ChunkedArray, target: Target) -> np.ndarray:
    """Each label's index in ``target.classes``; -1 where it is none of them or missing."""
    classes = _value_set(target.classes, truth.type)
    if classes is None:  # types Arrow does not match as pandas does: pandas' own matching
        values = pd.Series(truth.to_numpy(zero_copy_only=False))
        return np.asarray(pd.Categorical(values, categories=target.classes).codes, dtype=np.int64)
    found = pc.index_in(truth, value_set=classes)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _value_set(classes: list[Any], labels: pa.DataType) -> pa.Array | None:
    """The classes as Arrow values of the labels' type, where matching by value in Arrow means
    what it means in pandas (``pd.Categorical``): the same type, numbers against numbers, text
    against text. None otherwise (a dictionary column, text against numbers, 1.5 against ints)."""
    try:
        values = pa.array(classes)
        numbers = all(_number(t) for t in (values.type, labels))
        texts = all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in (values.type, labels))
        if values.type == labels or numbers or texts:
            return values.cast(labels)  # a safe cast: a value it would change raises
    except (pa.ArrowException, TypeError, ValueError):
        pass
    return None


def _number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


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
    names = [str(c) for c in target.classes]
    k = len(names)
    matrix = tally.confusion.reshape(k, k)
    right, rows = np.diagonal(matrix), matrix.sum(axis=1)
    metrics = {"accuracy": int(right.sum()) / n, "logloss": tally.sums["logloss"] / n}
    per_class = {names[i]: int(right[i]) / int(rows[i]) for i in range(k) if rows[i]}
    confusion: dict[str, dict[str, int]] = {}
    for truth, guess in zip(*np.nonzero(matrix), strict=True):
        confusion.setdefault(names[truth], {})[names[guess]] = int(matrix[truth, guess])
    return metrics, per_class, confusion
