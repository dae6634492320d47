"""Drift profiles: how the training rows fell into buckets, and how far new rows fall from them.

A profile is what training saw, small and JSON-ready: ``profile.json`` in the checkpoint folder,
beside the model. Per feature, buckets and the share of training rows in each:

- a numeric feature: up to ``QUANTILE_BINS`` buckets cut at the training deciles (each bucket
  from its cut point up to the next; repeated cut points dropped, so a feature with few values
  gets fewer buckets), then a bucket for missing values;
- a categorical, text or boolean feature: its most frequent values (up to ``MAX_CATEGORIES``),
  one bucket for every other value, and one for missing values.

It also keeps the label's class balance, and the reference for the model's predictions: the
model's own predictions on training rows where training could make them (``"model"``), else the
label's distribution (``"labels"``: the class balance, or the label's quantile buckets for
regression).

New rows are counted into the same buckets (``DriftCounter``: integer counts that add up batch by
batch, so a live service and an offline file run the same code), and each feature's new shares
are compared with the training shares by the Population Stability Index::

    PSI = sum over buckets of (a - e) * ln(a / e)

``e`` is a bucket's training share and ``a`` its new share; a share under ``EPSILON`` (an empty
bucket on either side) counts as ``EPSILON`` (1e-4, as Evidently does) so the logarithm stays
finite. The usual reading: under 0.1 no shift, 0.1-0.2 a moderate one, over 0.2 a significant
one (``DEFAULT_THRESHOLD``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rayline.errors import DataError

PROFILE_FILE = "profile.json"
PROFILE_VERSION = 1
DEFAULT_THRESHOLD = 0.2
EPSILON = 1e-4
QUANTILE_BINS = 10
MAX_CATEGORIES = 20
MIN_ROWS = 100  # fewer new rows than this: the PSI would mostly measure sampling noise
OTHER = "(other)"
MISSING = "(missing)"

_FEW = 1_000  # values counted one by one in Python below this; with pandas above

BinKind = Literal["numeric", "categorical"]
PredictionSource = Literal["model", "labels"]


# --------------------------------------------------------------------------------- the index
def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population Stability Index of two distributions over the same buckets (shares summing to 1).

    ``sum((a - e) * ln(a / e))``, each share floored at ``EPSILON`` so an empty bucket counts.
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    if e.shape != a.shape:
        raise ValueError(f"PSI of {e.size} expected shares against {a.size} actual ones")
    return float(np.sum((a - e) * np.log(a / e)))


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts -> shares (all zero when nothing was counted)."""
    total = counts.sum()
    out: np.ndarray = counts / total if total else np.zeros(len(counts), dtype=np.float64)
    return out


# ------------------------------------------------------------------------------- the buckets
def _floats(values: Any) -> np.ndarray:
    try:
        out: np.ndarray = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        # Object columns with pandas' NA in them, or text: NA becomes NaN, text stays an error.
        out = pd.Series(values, dtype=object).astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return out.reshape(-1)


def _text(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(each present value as text, the missing mask): a class or category is matched by its text."""
    array = np.asarray(values, dtype=object).reshape(-1)
    missing = np.asarray(pd.isna(array), dtype=bool)
    present = array[~missing] if missing.any() else array
    return present.astype(str), missing


def count_numeric(values: Any, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts per bucket: ``< edges[0]``, ``[edges[0], edges[1])``, ..., ``>= edges[-1]``, missing."""
    floats = _floats(values)
    missing = np.isnan(floats)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), floats[~missing], side="right")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return np.append(counts, missing.sum()).astype(np.int64)


def count_categorical(values: Any, categories: Sequence[str]) -> np.ndarray:
    """Counts per bucket: each category, every other value, missing."""
    text, missing = _text(values)
    if len(text) <= _FEW:
        # A served batch: a dict lookup per value beats building a pandas Categorical tenfold.
        index = {c: i for i, c in enumerate(categories)}
        codes = np.fromiter((index.get(t, -1) for t in text.tolist()), dtype=np.int64, count=len(text))
    else:
        codes = np.asarray(pd.Categorical(text, categories=list(categories)).codes)
    counts = np.bincount(codes[codes >= 0], minlength=len(categories))
    return np.append(counts, [(codes < 0).sum(), missing.sum()]).astype(np.int64)


@dataclass(frozen=True)
class Bins:
    """One profiled quantity: its buckets and the training share of each (missing last)."""

    kind: BinKind
    expected: tuple[float, ...]
    edges: tuple[float, ...] = ()  # numeric: ascending cut points
    categories: tuple[str, ...] = ()  # categorical: the values kept, as text

    @property
    def size(self) -> int:
        return len(self.expected)

    def count(self, values: Any) -> np.ndarray:
        """How many of ``values`` fall in each bucket."""
        if self.kind == "numeric":
            return count_numeric(values, self.edges)
        return count_categorical(values, self.categories)

    def labels(self) -> list[str]:
        """A short name per bucket, for tables and plots."""
        if self.kind == "categorical":
            return [*self.categories, OTHER, MISSING]
        if not self.edges:
            return ["all", MISSING]
        cut = [f"{e:.4g}" for e in self.edges]
        inner = [f"[{lo}, {hi})" for lo, hi in pairwise(cut)]
        return [f"< {cut[0]}", *inner, f">= {cut[-1]}", MISSING]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "expected": list(self.expected)}
        if self.kind == "numeric":
            out["edges"] = list(self.edges)
        else:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Bins:
        bins = cls(
            kind=raw["kind"],
            expected=tuple(float(v) for v in raw["expected"]),
            edges=tuple(float(v) for v in raw.get("edges", ())),
            categories=tuple(str(v) for v in raw.get("categories", ())),
        )
        buckets = len(bins.edges) + 2 if bins.kind == "numeric" else len(bins.categories) + 2
        if bins.kind not in ("numeric", "categorical") or bins.size != buckets:
            raise ValueError(f"{bins.kind} buckets with {bins.size} shares for {buckets} buckets")
        return bins


def numeric_bins(values: Any, bins: int = QUANTILE_BINS) -> Bins:
    """Buckets cut at the quantiles of ``values`` (present ones), and their shares."""
    floats = _floats(values)
    present = floats[~np.isnan(floats)]
    # Cut points are observed values ("higher": the first value at or past each quantile), so a
    # feature with few values is cut between its values, not at fractions of them.
    cuts = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.quantile(present, cuts, method="higher")) if present.size else np.empty(0)
    edges = edges[np.isfinite(edges)]
    expected = shares(count_numeric(floats, edges))
    return Bins("numeric", tuple(expected.tolist()), edges=tuple(edges.tolist()))


def categorical_bins(values: Any, categories: Sequence[Any] | None = None, top: int = MAX_CATEGORIES) -> Bins:
    """Buckets for ``categories`` (default: the ``top`` most frequent values), and their shares."""
    if categories is None:
        text, _ = _text(values)
        counted = pd.Series(text, dtype=object).value_counts()
        # Most frequent first, ties by name, so the same rows always keep the same categories.
        ranked = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        kept = sorted(str(k) for k, _ in ranked)
    else:
        kept = [str(c) for c in categories]
    expected = shares(count_categorical(values, kept))
    return Bins("categorical", tuple(expected.tolist()), categories=tuple(kept))


# ------------------------------------------------------------------------------- the profile
@dataclass(frozen=True)
class Profile:
    """What training saw: buckets per feature, the class balance, the predictions' reference."""

    rows: int
    features: dict[str, Bins]
    prediction: Bins | None = None
    prediction_source: PredictionSource = "labels"
    label: str | None = None
    task: str | None = None
    class_balance: dict[str, float] = field(default_factory=dict)

    def with_predictions(self, predictions: Any) -> Profile:
        """The model's predictions on training rows as the predictions' reference."""
        if self.task == "regression":
            bins = numeric_bins(predictions)
        else:
            bins = categorical_bins(predictions, self.prediction.categories if self.prediction else None)
        return replace(self, prediction=bins, prediction_source="model")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION,
            "rows": self.rows,
            "label": self.label,
            "task": self.task,
            "class_balance": self.class_balance,
            "features": {name: bins.to_dict() for name, bins in self.features.items()},
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "prediction_source": self.prediction_source,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Profile:
        if raw.get("version") != PROFILE_VERSION:
            raise ValueError(f"profile version {raw.get('version')!r}; this rayline reads {PROFILE_VERSION}")
        prediction = raw.get("prediction")
        return cls(
            rows=int(raw["rows"]),
            features={str(n): Bins.from_dict(b) for n, b in raw["features"].items()},
            prediction=Bins.from_dict(prediction) if prediction else None,
            prediction_source=raw.get("prediction_source", "labels"),
            label=raw.get("label"),
            task=raw.get("task"),
            class_balance={str(k): float(v) for k, v in (raw.get("class_balance") or {}).items()},
        )

    def save(self, folder: Path) -> Path:
        """Write ``folder/profile.json`` whole or not at all (a temp file renamed)."""
        target = folder / PROFILE_FILE
        fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, folder: Path) -> Profile:
        """``folder/profile.json``; DataError when absent or unreadable."""
        path = folder / PROFILE_FILE
        if not path.is_file():
            raise DataError(f"{folder} has no {PROFILE_FILE}: the model was trained before rayline stored profiles")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a readable drift profile ({err})") from None


def build_profile(
    values: Mapping[str, Any],
    kinds: Mapping[str, BinKind],
    *,
    labels: Any | None = None,
    label: str | None = None,
    task: str | None = None,
    classes: Sequence[Any] = (),
) -> Profile:
    """A profile of training rows: ``values`` per feature (``kinds`` says how to bucket each),
    ``labels`` (values, or class names) for the class balance and the predictions' reference."""
    rows = {len(np.asarray(values[name], dtype=object).reshape(-1)) for name in kinds}
    if len(rows) > 1:
        raise ValueError(f"profiled features have different lengths: {sorted(rows)}")
    features = {
        name: numeric_bins(values[name]) if kinds[name] == "numeric" else categorical_bins(values[name])
        for name in kinds
    }
    prediction, balance = None, {}
    if labels is not None and task == "regression":
        prediction = numeric_bins(labels)
    elif labels is not None:
        prediction = categorical_bins(labels, classes or None)
        balance = dict(zip(prediction.categories, prediction.expected, strict=False))
    return Profile(
        rows=rows.pop() if rows else 0,
        features=features,
        prediction=prediction,
        label=label,
        task=task,
        class_balance=balance,
    )


# ------------------------------------------------------------------------ counting new rows
def frame_predictions(outputs: pd.DataFrame) -> np.ndarray | None:
    """A batch prediction frame's predicted labels (or values, for regression); None: neither."""
    for column in ("predicted_label", "prediction"):
        if column in outputs.columns:
            values: np.ndarray = outputs[column].to_numpy()
            return values
    return None


def result_predictions(results: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """Serving results' predicted labels (``label``) or values (``prediction``); None: neither."""
    if not results:
        return None
    key = next((k for k in ("label", "prediction") if k in results[0]), None)
    if key is None:
        return None
    return np.asarray([r.get(key) for r in results], dtype=np.float64 if key == "prediction" else object)


@dataclass(frozen=True)
class DriftResult:
    """New rows against a profile: PSI per feature and of the predictions, and what passes ``threshold``."""

    rows: int
    threshold: float
    features: dict[str, float]
    prediction: float | None
    flagged: list[str]  # features with PSI over the threshold, most drifted first
    prediction_flagged: bool
    prediction_source: PredictionSource = "labels"
    buckets: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # feature -> labels/expected/actual
    prediction_buckets: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return bool(self.flagged) or self.prediction_flagged

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "flagged": self.flagged,
            "psi": self.features,
            "prediction_psi": self.prediction,
            "prediction_flagged": self.prediction_flagged,
            "prediction_reference": self.prediction_source,
            "buckets": self.buckets,
            "prediction_buckets": self.prediction_buckets,
        }


class DriftCounter:
    """Counts of new rows in a profile's buckets; add batches as they come, read the PSI any time."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.rows = 0
        self.counts = {name: np.zeros(bins.size, dtype=np.int64) for name, bins in profile.features.items()}
        self.predicted = np.zeros(profile.prediction.size if profile.prediction else 0, dtype=np.int64)

    def add(self, values: Mapping[str, Any], predictions: Any | None = None) -> None:
        """Count one batch: each profiled feature's values (same length) and, if given, its predictions."""
        counted: dict[str, np.ndarray] = {}
        for name, bins in self.profile.features.items():
            if name not in values:
                raise DataError(f"no values for the profiled feature {name!r}")
            counted[name] = bins.count(values[name])
        lengths = {int(c.sum()) for c in counted.values()}
        if len(lengths) > 1:
            raise DataError(f"the profiled features hold different numbers of values: {sorted(lengths)}")
        for name, counts in counted.items():
            self.counts[name] += counts
        self.rows += lengths.pop() if lengths else 0
        if predictions is not None and self.profile.prediction is not None:
            self.predicted += self.profile.prediction.count(predictions)

    def merge(self, other: DriftCounter) -> DriftCounter:
        """A new counter holding both counters' rows (same profile)."""
        both = DriftCounter(self.profile)
        both.rows = self.rows + other.rows
        both.counts = {name: self.counts[name] + other.counts[name] for name in self.counts}
        both.predicted = self.predicted + other.predicted
        return both

    def result(self, threshold: float = DEFAULT_THRESHOLD) -> DriftResult:
        features: dict[str, float] = {}
        buckets: dict[str, dict[str, list[Any]]] = {}
        for name, bins in self.profile.features.items():
            actual = shares(self.counts[name])
            features[name] = psi(bins.expected, actual) if self.rows else 0.0
            buckets[name] = {"labels": bins.labels(), "expected": list(bins.expected), "actual": actual.tolist()}
        flagged = sorted((n for n, v in features.items() if v > threshold), key=lambda n: -features[n])
        prediction: float | None = None
        prediction_buckets: dict[str, list[Any]] = {}
        reference = self.profile.prediction
        if reference is not None and self.predicted.sum():
            actual = shares(self.predicted)
            prediction = psi(reference.expected, actual)
            prediction_buckets = {
                "labels": reference.labels(),
                "expected": list(reference.expected),
                "actual": actual.tolist(),
            }
        return DriftResult(
            rows=self.rows,
            threshold=threshold,
            features=features,
            prediction=prediction,
            flagged=flagged,
            prediction_flagged=prediction is not None and prediction > threshold,
            prediction_source=self.profile.prediction_source,
            buckets=buckets,
            prediction_buckets=prediction_buckets,
        )
