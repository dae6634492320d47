"""Evaluation's per-batch reduction (``rayline.stages.tally``): labels matched to classes in Arrow
as pandas matches them, and a tally cut into batches, or sent as JSON, adds up to the whole's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rayline.data import Target
from rayline.errors import DataError
from rayline.stages.tally import Tally, label_codes, metrics_of, tally_batch

CASES: list[tuple[pa.Array, list[Any]]] = [
    (pa.array([True, False, None, True]), [False, True]),
    (pa.array([1, 0, 2, None], type=pa.int64()), [0, 1]),
    (pa.array([1.0, 0.0, 0.5, float("nan"), None]), [0, 1]),  # floats against int classes
    (pa.array([1, 0, 3], type=pa.int32()), [0.0, 1.0]),  # ints against float classes
    (pa.array([1, 0], type=pa.int64()), [0.5, 1.0]),  # 0.5 is no int: pandas matches
    (pa.array(["low", "mid", "x", None], type=pa.large_string()), ["high", "low", "mid"]),
    (pa.array(["low", "mid", "high"]).dictionary_encode(), ["high", "low", "mid"]),
    (pa.array(["0", "1"]), [0, 1]),  # text against numbers: none of the classes
    (pa.array([0, 1], type=pa.int64()), [False, True]),  # numbers against booleans
]


@pytest.mark.parametrize(("labels", "classes"), CASES, ids=[str(c[0].type) + str(c[1]) for c in CASES])
def test_labels_match_classes_as_pandas_matches_them(labels: pa.Array, classes: list[Any]) -> None:
    expected = pd.Categorical(pd.Series(labels.to_numpy(zero_copy_only=False)), categories=classes).codes
    got = label_codes(labels, Target("y", "binary" if len(classes) == 2 else "multiclass", classes))
    assert got.tolist() == expected.tolist()


def _binary(rows: int, seed: int) -> tuple[pa.Array, np.ndarray]:
    rng = np.random.default_rng(seed)
    return pa.array(rng.random(rows) < 0.4), rng.random(rows)


def test_a_tally_adds_up_by_batches_and_through_json() -> None:
    target = Target("y", "binary", [False, True])
    labels, scores = _binary(10_000, 0)
    whole = tally_batch(labels, scores, target)
    parts = Tally()
    for start in range(0, 10_000, 3_000):
        batch = tally_batch(labels.slice(start, 3_000), scores[start : start + 3_000], target)
        parts.add(Tally.from_json(batch.to_json()))
    assert parts.rows == whole.rows == 10_000
    assert parts.confusion.tolist() == whole.confusion.tolist()
    assert parts.histograms.tolist() == whole.histograms.tolist()
    assert int(whole.pos.sum()) == sum(labels.to_pylist())
    assert parts.sums["logloss"] == pytest.approx(whole.sums["logloss"], rel=1e-12)
    metrics, per_class, confusion = metrics_of(parts, target)
    truth, guess = np.asarray(labels), scores >= 0.5
    assert metrics["accuracy"] == (truth == guess).mean()
    assert per_class == {str(c): (guess[truth == c] == c).mean() for c in (False, True)}
    assert confusion["True"]["False"] == int((truth & ~guess).sum())


def test_a_missing_or_unknown_label_is_refused() -> None:
    target = Target("y", "multiclass", ["high", "low", "mid"])
    scores = np.full((2, 3), 1 / 3)
    with pytest.raises(DataError, match="label column 'y' has missing values"):
        tally_batch(pa.array(["low", None]), scores, target)
    with pytest.raises(DataError, match=r"label 'top' \(str\) is not one of the model's classes"):
        tally_batch(pa.array(["top", "low"]), scores, target)
