"""The drift profile a trained model carries: ``profile.json`` in its checkpoint folder.

Written by ``log_run`` (train and every tune trial) from the training split: the data kind
profiles a bounded sample (``SAMPLE_ROWS`` rows, fewer when rows are big: images), and the
model's own predictions on a smaller one (``PREDICTION_ROWS``) become the reference for the
prediction distribution, so a model that predicts one class more often than the labels hold it
is not read as drift. The feature part is computed once per prepared dataset, however many
trials log a model from it. A profile is an extra: a failure to build one is logged and the
run is registered without it.
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline import runtime
from rayline.checkpoints import read_meta
from rayline.data import Prepared, get_kind
from rayline.data.drift_profile import Profile, frame_predictions
from rayline.errors import first_line
from rayline.families import Family

log = logging.getLogger(__name__)

SAMPLE_ROWS = 50_000
SAMPLE_BYTES = 256 * 1024**2  # of a Ray Dataset sample brought to this process
PREDICTION_ROWS = 2_000
PREDICTION_CHUNK = 250
PREDICTION_SECONDS = 0.5
_SEED = 0

# id(prepared) -> (a weak reference to it, its features' profile, the rows the model predicts).
_cache: dict[int, tuple[weakref.ref[Prepared], dict[str, Any], pd.DataFrame]] = {}


def training_sample(data: Prepared) -> pd.DataFrame:
    """At most ``SAMPLE_ROWS`` random rows of the training split, on either engine."""
    if "train" in data.frames:
        frame = data.frames["train"]
        return frame.sample(n=SAMPLE_ROWS, random_state=_SEED) if len(frame) > SAMPLE_ROWS else frame
    ds = data.datasets["train"]
    rows = ds.count()
    size = ds.size_bytes() or 0
    # The datasets are materialized: the count and size are metadata, not a pass over the rows.
    limit = min(SAMPLE_ROWS, max(100, int(SAMPLE_BYTES / max(size / max(rows, 1), 1.0))))
    if rows > limit:
        ds = ds.random_sample(min(1.0, 1.2 * limit / rows), seed=_SEED)
    return ds.limit(limit).to_pandas()


def _features(data: Prepared, meta: dict[str, Any], family: Family) -> tuple[dict[str, Any], pd.DataFrame]:
    key = id(data)
    cached = _cache.get(key)
    if cached is not None and cached[0]() is data:
        return cached[1], cached[2]
    sample = training_sample(data)
    profile = get_kind(family.data_kind).profile(sample, meta)
    rows = sample.iloc[:PREDICTION_ROWS].reset_index(drop=True)
    _cache[key] = (weakref.ref(data), profile, rows)
    weakref.finalize(data, _cache.pop, key, None)
    return profile, rows


def _model_predictions(family: Family, checkpoint: Path, rows: pd.DataFrame) -> Any | None:
    """The model's predictions on ``rows``, in chunks until ``PREDICTION_SECONDS`` have passed.

    A tree model predicts 2,000 rows in milliseconds; a CNN on CPUs took 3.3 s for them (mnist,
    2 cores), on every training run: past the time budget the rows predicted so far are the
    reference (at least one chunk)."""
    try:
        predictor = family.load(checkpoint, cpus=runtime.local_cpus())
        start, parts = time.perf_counter(), []
        for first in range(0, len(rows), PREDICTION_CHUNK):
            part = frame_predictions(predictor.predict(rows.iloc[first : first + PREDICTION_CHUNK]))
            if part is None:
                return None
            parts.append(part)
            if time.perf_counter() - start > PREDICTION_SECONDS:
                break
        return np.concatenate(parts) if parts else None
    except Exception as err:  # the labels' distribution stays the reference
        log.warning("drift profile: the class balance is the predictions' reference (%s)", first_line(err))
        return None


def profiled_rows(data: Prepared, checkpoint: Path, family: Family) -> pd.DataFrame:
    """Training rows, as the data kind holds them: the ones the model's predictions were profiled
    on (cached per prepared dataset). The MLflow model's signature and input example come from them."""
    return _features(data, read_meta(checkpoint), family)[1]


def store_profile(checkpoint: Path, data: Prepared, family: Family) -> Path | None:
    """Write ``profile.json`` into ``checkpoint``; None (and a warning) when it cannot be built."""
    start = time.perf_counter()
    try:
        meta = read_meta(checkpoint)
        features, rows = _features(data, meta, family)
        profile = Profile.from_dict(features)
        predictions = _model_predictions(family, checkpoint, rows) if len(rows) else None
        if predictions is not None and len(predictions):
            profile = profile.with_predictions(predictions)
        path = profile.save(checkpoint)
    except Exception as err:  # a profile is an extra: the trained model is registered without one
        log.warning("no drift profile stored with the model: %s: %s", type(err).__name__, first_line(err))
        return None
    log.info("drift profile of %d training rows in %.2f s", profile.rows, time.perf_counter() - start)
    return path
