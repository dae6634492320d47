"""The numbers of a replay: a candidate's answers against the answers a service recorded.

- agreement: the share of rows where both give the same label (regression: the same value to
  ``TOLERANCE``), and the max/mean absolute difference of the probabilities (of the positive
  class for binary, of every class where both have them) or of the predicted values;
- shift: the PSI (``rayline.data.drift_profile.psi``) of the candidate's predicted labels, and of
  its probabilities (binary: ten buckets of 0.1) or values (regression: the recorded values'
  deciles), against the recorded ones' as the reference;
- with labels: each metric of both on the same rows, and the difference (candidate minus
  recorded) with a percentile bootstrap interval: rows resampled with replacement, the same
  resample for both models, ``RESAMPLES`` times with a fixed seed, so a replay is reproducible.

Per-row terms (correct, log loss, squared and absolute error) are computed once; a resample
only averages them (AUC is ranked again per resample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayline.data.drift_profile import Bins, categorical_bins, numeric_bins, psi, shares

TOLERANCE = 1e-6  # regression: values this close (relative) are the same answer
RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
_EPS = 1e-15
_PROBABILITY_EDGES = tuple(round(0.1 * i, 1) for i in range(1, 10))


@dataclass(frozen=True)
class Answers:
    """One model's answers on the replayed rows, as arrays (classes: the model's, in order)."""

    labels: np.ndarray | None  # object array of labels as text (classification)
    probability: np.ndarray | None  # binary: P(second class); multiclass: the predicted class's
    probabilities: np.ndarray | None  # multiclass: rows x classes, where known
    prediction: np.ndarray | None  # regression


def recorded_answers(outputs: Sequence[Mapping[str, Any]], task: str, classes: Sequence[Any]) -> Answers:
    """The answers a service recorded (``/predict`` results: label, probability, probabilities, prediction)."""
    if task == "regression":
        return Answers(None, None, None, np.asarray([o.get("prediction") for o in outputs], dtype=np.float64))
    labels = np.asarray([str(o.get("label")) for o in outputs], dtype=object)
    probability = np.asarray([o.get("probability", np.nan) for o in outputs], dtype=np.float64)
    probabilities = None
    names = [str(c) for c in classes]
    if task == "multiclass" and outputs and isinstance(outputs[0].get("probabilities"), Mapping):
        probabilities = np.asarray([[o["probabilities"].get(n, np.nan) for n in names] for o in outputs], np.float64)
    return Answers(labels, probability, probabilities, None)


def frame_answers(frame: Any, task: str) -> Answers:
    """The answers batch prediction wrote (columns predicted_label, probability, probabilities, prediction)."""
    if task == "regression":
        return Answers(None, None, None, frame["prediction"].to_numpy(dtype=np.float64))
    probabilities = None
    if task == "multiclass" and "probabilities" in frame.columns:
        probabilities = np.stack([np.asarray(p, dtype=np.float64) for p in frame["probabilities"]])
    labels = frame["predicted_label"].astype(str).to_numpy(dtype=object)
    return Answers(labels, frame["probability"].to_numpy(dtype=np.float64), probabilities, None)


def _scores(answers: Answers) -> np.ndarray:
    if answers.prediction is not None:
        return answers.prediction
    if answers.probabilities is not None:
        return answers.probabilities
    assert answers.probability is not None
    return answers.probability


def agreement(candidate: Answers, recorded: Answers) -> dict[str, float]:
    """Share of equal answers, and the max/mean absolute difference of scores (probabilities or values)."""
    mine, theirs = _scores(candidate), _scores(recorded)
    if mine.ndim != theirs.ndim:  # one side without per-class probabilities: the predicted class's
        assert candidate.probability is not None and recorded.probability is not None
        mine, theirs = candidate.probability, recorded.probability
    gap = np.abs(mine - theirs)
    gap = gap.max(axis=1) if gap.ndim == 2 else gap
    if candidate.labels is not None and recorded.labels is not None:
        same = float(np.mean(candidate.labels == recorded.labels))
    else:
        same = float(np.mean(gap <= TOLERANCE * (1.0 + np.abs(theirs))))
    return {
        "agreement": same,
        "max_abs_diff": float(np.nanmax(gap)) if gap.size else 0.0,
        "mean_abs_diff": float(np.nanmean(gap)) if gap.size else 0.0,
    }


@dataclass(frozen=True)
class Shift:
    """PSI of one quantity: the candidate's shares against the recorded ones, per bucket."""

    psi: float
    buckets: list[str]
    recorded: list[float]
    candidate: list[float]


def _shift(bins: Bins, recorded: Any, candidate: Any) -> Shift:
    expected, actual = shares(bins.count(recorded)), shares(bins.count(candidate))
    return Shift(psi(expected, actual), bins.labels(), expected.tolist(), actual.tolist())


def shift(candidate: Answers, recorded: Answers, classes: Sequence[Any]) -> dict[str, Shift]:
    """``labels`` (classification), ``probability`` (binary) or ``prediction`` (regression)."""
    out: dict[str, Shift] = {}
    if candidate.labels is not None and recorded.labels is not None:
        bins = categorical_bins(recorded.labels, categories=[str(c) for c in classes])
        out["labels"] = _shift(bins, recorded.labels, candidate.labels)
    if candidate.prediction is not None and recorded.prediction is not None:
        out["prediction"] = _shift(numeric_bins(recorded.prediction), recorded.prediction, candidate.prediction)
    elif len(classes) == 2 and candidate.probability is not None and recorded.probability is not None:
        bins = Bins("numeric", (0.0,) * (len(_PROBABILITY_EDGES) + 2), edges=_PROBABILITY_EDGES)
        out["probability"] = _shift(bins, recorded.probability, candidate.probability)
    return out


# ------------------------------------------------------------------------------ with labels
def auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); NaN when one class is absent."""
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    _, inverse, counts = np.unique(score[order], return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = average[inverse]
    return float((ranks[positive.astype(bool)].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


Metric = Callable[[np.ndarray], float]  # rows (indexes) -> the metric on them


def _metrics(answers: Answers, truth: np.ndarray, task: str, classes: Sequence[Any]) -> dict[str, Metric]:
    """One model's metrics as functions of the rows they are taken on (the names ``evaluate`` uses)."""
    if task == "regression":
        assert answers.prediction is not None
        err = answers.prediction - truth.astype(np.float64)
        sq, ab = err**2, np.abs(err)
        return {"rmse": lambda i: float(np.sqrt(sq[i].mean())), "mae": lambda i: float(ab[i].mean())}
    assert answers.labels is not None
    correct = (answers.labels == truth).astype(np.float64)
    out: dict[str, Metric] = {"accuracy": lambda i: float(correct[i].mean())}
    index = np.asarray([{str(c): k for k, c in enumerate(classes)}[t] for t in truth])
    if task == "binary" and answers.probability is not None:
        p1, positive = answers.probability, (index == 1).astype(np.int8)
        loss = -np.log(np.clip(np.where(index == 1, p1, 1.0 - p1), _EPS, 1.0))
        out["logloss"] = lambda i: float(loss[i].mean())
        out["auc"] = lambda i: auc(positive[i], p1[i])
    elif answers.probabilities is not None:
        multi = -np.log(np.clip(answers.probabilities[np.arange(len(index)), index], _EPS, 1.0))
        out["logloss"] = lambda i: float(multi[i].mean())
    return out


@dataclass(frozen=True)
class Difference:
    """A metric of both models on the labelled rows, and candidate minus recorded with its interval."""

    candidate: float
    recorded: float
    difference: float
    low: float
    high: float
    resamples: int  # resamples that defined the metric (AUC needs both classes)
    draws: list[float]  # the resampled differences (the report's histogram)


def differences(
    candidate: Answers,
    recorded: Answers,
    truth: np.ndarray,
    task: str,
    classes: Sequence[Any],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, Difference]:
    """Each metric both models define on the labelled rows, with a percentile bootstrap interval."""
    mine = _metrics(candidate, truth, task, classes)
    theirs = _metrics(recorded, truth, task, classes)
    names = [n for n in mine if n in theirs]
    n = len(truth)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(resamples):
        rows = rng.integers(0, n, n)
        for name in names:
            draws[name].append(mine[name](rows) - theirs[name](rows))
    everything = np.arange(n)
    tail = (1.0 - level) / 2.0 * 100.0
    out: dict[str, Difference] = {}
    for name in names:
        a, b = mine[name](everything), theirs[name](everything)
        kept = np.asarray([d for d in draws[name] if np.isfinite(d)])
        if not (np.isfinite(a) and np.isfinite(b)) or kept.size == 0:
            continue  # AUC on rows of one class: undefined, left out
        low, high = np.percentile(kept, [tail, 100.0 - tail])
        out[name] = Difference(a, b, a - b, float(low), float(high), int(kept.size), kept.tolist())
    return out
