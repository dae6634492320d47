"""Drift profiles and PSI (no Ray): hand-computed indexes, bucket counting, the data kinds' values,
the live monitor, and the shifted taxi generator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rayline.data import get_kind
from rayline.data.drift_profile import (
    EPSILON,
    MISSING,
    OTHER,
    DriftCounter,
    Profile,
    build_profile,
    categorical_bins,
    count_categorical,
    count_numeric,
    numeric_bins,
    psi,
)
from rayline.data.image_codec import ImageLayout
from rayline.data.table_schema import TableLayout
from rayline.datasets.taxi import generate_taxi
from rayline.errors import DataError
from rayline.serving._drift import LiveDrift

TABLE = TableLayout(
    features=["x", "n", "color"],
    label="clicked",
    task="binary",
    classes=[0, 1],
    categorical={"color": ["blue", "green", "red"]},
    dtypes={"x": "double", "n": "int64", "color": "string", "clicked": "int64"},
)
TABLE_META: dict[str, Any] = {"family": "xgboost", "data_kind": "table", "layout": TABLE.to_dict()}
GRAY = ImageLayout(classes=["0", "1"], mode="L", size=(2, 2))
IMAGE_META: dict[str, Any] = {"family": "resnet18", "data_kind": "images", "layout": GRAY.to_dict()}


def table_rows(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(loc=shift, size=rows),
            "n": rng.integers(0, 10, size=rows),
            "color": rng.choice(["blue", "green", "red"], size=rows),
            "clicked": rng.integers(0, 2, size=rows),
        }
    )


# ---------------------------------------------------------------------------------- the index
def test_psi_matches_a_hand_computed_value() -> None:
    # (0.1-0.25)ln(0.4) + (0.2-0.25)ln(0.8) + (0.3-0.25)ln(1.2) + (0.4-0.25)ln(1.6)
    # = 0.137444 + 0.011157 + 0.009116 + 0.070501 = 0.228218
    assert psi([0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.228218, abs=1e-6)
    assert psi([0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]) == 0.0


def test_an_empty_bucket_counts_as_epsilon() -> None:
    # Training never saw the third bucket: its share is taken as 1e-4, so the index stays finite.
    # (0.4-0.5)ln(0.8) + (0.1-0.0001)ln(0.1/0.0001) = 0.022314 + 0.690085 = 0.712399
    assert EPSILON == 1e-4
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) == pytest.approx(0.712399, abs=1e-6)
    # ... and the other way round: a bucket the new rows leave empty.
    assert psi([0.5, 0.4, 0.1], [0.5, 0.5, 0.0]) == pytest.approx(0.712399, abs=1e-6)


def test_psi_refuses_different_buckets() -> None:
    with pytest.raises(ValueError, match="3 expected shares against 2"):
        psi([0.2, 0.3, 0.5], [0.5, 0.5])


# -------------------------------------------------------------------------------- the buckets
def test_numeric_counting_with_known_edges() -> None:
    # buckets: < 2, [2, 5), >= 5, missing
    counts = count_numeric([1.0, 2.0, 4.9, 5.0, 7.0, np.nan, None], [2.0, 5.0])
    assert counts.tolist() == [1, 2, 2, 2]


def test_numeric_bins_cut_at_training_deciles_with_a_missing_bucket() -> None:
    values = np.concatenate([np.arange(90, dtype=np.float64), np.full(10, np.nan)])
    bins = numeric_bins(values)
    # The first present value at or past each decile: 0..89 cut at 9, 18, ..., 81; 9 values a bucket.
    assert bins.edges == (9.0, 18.0, 27.0, 36.0, 45.0, 54.0, 63.0, 72.0, 81.0)
    assert bins.expected == pytest.approx([0.09] * 10 + [0.1])
    assert bins.labels()[:2] == ["< 9", "[9, 18)"] and bins.labels()[-2:] == [">= 81", MISSING]


def test_a_feature_with_few_values_gets_fewer_buckets() -> None:
    bins = numeric_bins([1.0] * 70 + [2.0] * 20 + [3.0] * 10)
    assert bins.edges == (1.0, 2.0, 3.0)
    assert bins.expected == pytest.approx([0.0, 0.7, 0.2, 0.1, 0.0])


def test_categorical_buckets_keep_the_top_values_and_an_other() -> None:
    assert count_categorical(["a", "b", "zz", None, "a", np.nan], ["a", "b"]).tolist() == [2, 1, 1, 2]
    bins = categorical_bins(["a", "a", "a", "b", "b", "c"], top=2)
    assert bins.categories == ("a", "b")
    assert bins.expected == pytest.approx([0.5, 2 / 6, 1 / 6, 0.0])
    assert bins.labels() == ["a", "b", OTHER, MISSING]
    # Values are matched by their text: booleans and numpy booleans alike.
    assert count_categorical(np.array([True, False, True]), ["False", "True"]).tolist() == [1, 2, 0, 0]


def test_categorical_counts_agree_for_small_and_large_batches() -> None:
    # Served batches are counted by a dict lookup, large offline ones by pandas: the same counts.
    rng = np.random.default_rng(0)
    values = rng.choice(np.array(["a", "b", "c", None], dtype=object), size=5_000)
    whole = count_categorical(values, ["a", "b"])
    parts = sum(count_categorical(values[i : i + 500], ["a", "b"]) for i in range(0, 5_000, 500))
    assert whole.tolist() == parts.tolist()
    assert whole.sum() == 5_000 and whole[-1] == sum(v is None for v in values)


def test_a_categorical_psi_from_counts() -> None:
    profile = build_profile({"c": ["a"] * 50 + ["b"] * 50}, {"c": "categorical"})
    counter = DriftCounter(profile)
    counter.add({"c": ["a"] * 20 + ["b"] * 60 + ["new"] * 20})
    # buckets a, b, other, missing: expected 0.5, 0.5, 0, 0; actual 0.2, 0.6, 0.2, 0
    by_hand = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.6 - 0.5) * math.log(0.6 / 0.5)
    by_hand += (0.2 - EPSILON) * math.log(0.2 / EPSILON)
    assert counter.result().features["c"] == pytest.approx(by_hand)


def test_counting_batch_by_batch_equals_counting_at_once() -> None:
    train = table_rows(2_000, seed=0)
    profile = Profile.from_dict(get_kind("table").profile(train, TABLE_META))
    new = table_rows(900, seed=1, shift=0.7)
    values = get_kind("table").frame_drift_values(new, TABLE_META)
    once, in_parts = DriftCounter(profile), DriftCounter(profile)
    once.add(values, new["clicked"].to_numpy())
    for part in np.array_split(np.arange(len(new)), 4):
        in_parts.add({k: v[part] for k, v in values.items()}, new["clicked"].to_numpy()[part])
    assert in_parts.rows == once.rows == 900
    for name in profile.features:
        assert in_parts.counts[name].tolist() == once.counts[name].tolist()
    assert in_parts.result().features == once.result().features
    assert in_parts.result().prediction == once.result().prediction
    # The shifted feature, and only it, is flagged.
    assert once.result().flagged == ["x"]


# ------------------------------------------------------------------------------- the profile
def test_a_table_profile_round_trips_through_json(tmp_path: Path) -> None:
    train = table_rows(1_000, seed=0)
    raw = get_kind("table").profile(train, TABLE_META)
    profile = Profile.from_dict(raw)
    assert profile.rows == 1_000 and profile.task == "binary"
    assert set(profile.features) == {"x", "n", "color"}
    assert profile.features["x"].kind == "numeric" and profile.features["color"].kind == "categorical"
    share = float((train["clicked"] == 1).mean())
    assert profile.class_balance == pytest.approx({"0": 1 - share, "1": share})
    assert Profile.load(Path(profile.save(tmp_path)).parent) == profile
    with pytest.raises(DataError, match=r"no profile\.json"):
        Profile.load(tmp_path / "elsewhere")


def test_a_regression_profile_buckets_the_label() -> None:
    layout = TableLayout(features=["x"], label="y", task="regression", dtypes={"x": "double", "y": "double"})
    meta = {"data_kind": "table", "layout": layout.to_dict()}
    frame = pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100.0) * 2})
    profile = Profile.from_dict(get_kind("table").profile(frame, meta))
    assert profile.prediction is not None and profile.prediction.kind == "numeric"
    assert profile.prediction.edges[0] == 20.0  # 0, 2, ..., 198: the 11th value is the first decile
    assert profile.class_balance == {}


def test_table_values_agree_for_records_and_frames() -> None:
    kind = get_kind("table")
    frame = table_rows(50, seed=3)
    body = kind.request_model(TABLE_META).model_validate(frame.to_dict("records"))
    items = kind.decode_request(body, TABLE_META)
    from_items = kind.drift_values(items, TABLE_META)
    from_frame = kind.frame_drift_values(frame, TABLE_META)
    for name in TABLE.features:
        assert list(from_items[name]) == list(from_frame[name])


def test_table_values_name_a_bad_column() -> None:
    frame = table_rows(5, seed=3).astype({"x": object})
    frame.loc[2, "x"] = "seven"
    with pytest.raises(DataError, match="column 'x' holds 'seven'"):
        get_kind("table").frame_drift_values(frame, TABLE_META)
    with pytest.raises(DataError, match="column 'n' is missing"):
        get_kind("table").frame_drift_values(frame.drop(columns=["n"]), TABLE_META)


def test_image_values_are_mean_intensity_and_ink_fraction() -> None:
    kind = get_kind("images")
    image = np.array([[[0, 255], [128, 10]]], dtype=np.uint8)  # 1x2x2
    blank = np.zeros((1, 2, 2), dtype=np.uint8)
    values = kind.drift_values([image, blank], IMAGE_META)
    assert values["mean_intensity"].tolist() == pytest.approx([(0 + 255 + 128 + 10) / 4, 0.0])
    assert values["ink_fraction"].tolist() == pytest.approx([0.5, 0.0])  # 255 and 128 are ink
    frame = pd.DataFrame({"image": [image, blank], "label": [1, 0]})
    assert {k: v.tolist() for k, v in kind.frame_drift_values(frame, IMAGE_META).items()} == {
        k: v.tolist() for k, v in values.items()
    }


def test_an_image_profile_has_the_class_balance_by_name() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(1, 2, 2), dtype=np.uint8) for _ in range(40)]
    frame = pd.DataFrame({"image": images, "label": [0] * 30 + [1] * 10})  # training frames hold indexes
    profile = Profile.from_dict(get_kind("images").profile(frame, IMAGE_META))
    assert set(profile.features) == {"mean_intensity", "ink_fraction"}
    assert profile.class_balance == pytest.approx({"0": 0.75, "1": 0.25})


# -------------------------------------------------------------------------- the live monitor
def live(threshold: float = 0.2, window: int = 100_000) -> LiveDrift:
    profile = get_kind("table").profile(table_rows(3_000, seed=0), TABLE_META)
    return LiveDrift(get_kind("table"), TABLE_META, profile, threshold=threshold, window=window)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    kind = get_kind("table")
    body = kind.request_model(TABLE_META).model_validate(frame.drop(columns=["clicked"]).to_dict("records"))
    return kind.decode_request(body, TABLE_META)


def test_live_drift_warms_up_then_reports() -> None:
    monitor = live()
    assert monitor.summary() == {"rows": 0, "seen": 0, "threshold": 0.2, "status": "warming up (0 of 100 rows)"}
    rows = table_rows(600, seed=5)
    for start in range(0, 600, 64):
        batch = rows.iloc[start : start + 64]
        monitor.observe(records(batch), [{"label": int(v), "probability": 0.9} for v in batch["clicked"]])
    summary = monitor.summary()
    assert summary["rows"] == summary["seen"] == 600
    assert summary["status"] == "ok" and summary["flagged"] == []
    assert set(summary["psi"]) == {"x", "n", "color"} and max(summary["psi"].values()) < 0.1
    assert summary["prediction_psi"] < 0.1 and summary["prediction_reference"] == "labels"


def test_live_drift_flags_a_shifted_feature_in_a_sliding_window() -> None:
    monitor = live(window=500)
    same, shifted = table_rows(1_000, seed=6), table_rows(1_000, seed=7, shift=1.0)
    for frame in (same, shifted.iloc[:900]):
        for start in range(0, len(frame), 100):
            batch = frame.iloc[start : start + 100]
            monitor.observe(records(batch), [{"label": 1, "probability": 0.5}] * len(batch))
    summary = monitor.summary()
    assert summary["seen"] == 1_900
    # Halves of 500 rows: the full one of shifted rows 0-499 and the filling one of 500-899.
    assert summary["rows"] == 900
    assert summary["status"] == "drift" and summary["flagged"] == ["x"]
    assert summary["prediction_flagged"] is True  # every prediction one class, against a 50/50 balance


def test_live_drift_never_fails_the_request() -> None:
    monitor = live()
    monitor.observe(["not a record"], [{"label": 1}])  # counted as an error, not raised
    assert monitor.summary()["errors"] == 1 and monitor.summary()["seen"] == 0


def test_live_drift_from_a_checkpoint_folder(tmp_path: Path) -> None:
    assert LiveDrift.from_checkpoint(get_kind("table"), TABLE_META, tmp_path) is None
    Profile.from_dict(get_kind("table").profile(table_rows(500, seed=0), TABLE_META)).save(tmp_path)
    monitor = LiveDrift.from_checkpoint(get_kind("table"), TABLE_META, tmp_path)
    assert monitor is not None and set(monitor.profile.features) == {"x", "n", "color"}


# ------------------------------------------------------------------------ shifted taxi trips
def test_taxi_trip_scale_lengthens_trips_and_nothing_else() -> None:
    plain = generate_taxi(5_000, seed=4)
    assert generate_taxi(5_000, seed=4, trip_scale=1.0).equals(plain)
    longer = generate_taxi(5_000, seed=4, trip_scale=1.8)
    for same in ("hour", "day_of_week", "passenger_count"):
        assert longer[same].equals(plain[same])
    ratio = np.median(longer["trip_distance"].to_numpy()) / np.median(plain["trip_distance"].to_numpy())
    assert ratio == pytest.approx(1.8, rel=0.02)
    assert np.median(longer["trip_duration"].to_numpy()) > 1.4 * np.median(plain["trip_duration"].to_numpy())
    with pytest.raises(DataError, match="trip_scale"):
        generate_taxi(10, trip_scale=0)
