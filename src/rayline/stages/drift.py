"""Offline drift: new rows against the profile a registered model was trained with.

``drift(run_id, input=...)`` reads the rows with the model's data kind in this process (in
batches, as batch prediction's local engine does), counts each profiled feature into the
training buckets, predicts with the family's predictor for the prediction distribution, and
computes the PSI per feature and of the predictions (``rayline.data.drift_profile``). It writes
``drift.json`` and ``drift.png`` (PSI per feature against the threshold, and the training vs
new bucket shares of the most drifted) to ``RAYLINE_HOME/drift/RUN`` or ``out``. A live service
counts the same buckets (``rayline.serving`` builds its monitor from the same profile).

Traffic a service captured (``serve.capture``, ``rayline.data.capture``) is an input too: its
inputs are counted as the live monitor counts requests, and its recorded answers are the
predictions (nothing is predicted again). ``against`` (another capture) compares one window
of traffic with another: both are counted in the training buckets, and the shares of the
``against`` window are the reference the PSI is taken against.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rayline import checkpoints, runtime
from rayline.atomic import atomic_output
from rayline.data import DataKind, get_kind
from rayline.data.capture import is_capture, items_of, outputs_of, read_capture
from rayline.data.drift_profile import (
    DEFAULT_THRESHOLD,
    MIN_ROWS,
    PROFILE_FILE,
    DriftCounter,
    DriftResult,
    Profile,
    frame_predictions,
    result_predictions,
    shares,
)
from rayline.errors import DataError, RaylineError, RegistryError, SpecError, map_error
from rayline.families import get_family
from rayline.registry import Registry, open_registry
from rayline.stages.drift_plot import draw_drift

_BATCH_ROWS = 50_000  # rows read and predicted at a time
_CAPTURE_ROWS = 10_000  # captured rows decoded at a time (images: bounded memory)


@dataclass(frozen=True)
class DriftReport:
    """What ``drift`` found and wrote: the result, and where its JSON and plot are."""

    run_id: str
    input: str
    result: DriftResult
    folder: Path
    json_path: Path
    plot: Path
    seconds: float

    @property
    def drifted(self) -> bool:
        return self.result.drifted


def _profile(folder: Path, run_id: str) -> Profile:
    if not (folder / PROFILE_FILE).is_file():
        raise RegistryError(
            f"run {run_id} has no drift profile ({PROFILE_FILE}): it was trained before rayline stored one",
            hint="train it again to compare new data with it",
        )
    return Profile.load(folder)


def drift(
    run_id: str,
    *,
    input: str,
    threshold: float = DEFAULT_THRESHOLD,
    out: Path | None = None,
    registry: Registry | None = None,
    against: str | None = None,
) -> DriftReport:
    """Compare ``input`` (a table or image set the model could predict, or a capture folder) with
    run ``run_id``'s training profile, or with the capture ``against`` (one window of traffic
    against another); write ``drift.json`` and ``drift.png``; flag PSI over ``threshold``."""
    start = time.perf_counter()
    if not threshold > 0:
        raise SpecError(f"--threshold {threshold}: expected a positive PSI, e.g. 0.2")
    registry = registry or open_registry()
    record = registry.get(run_id)
    folder = registry.checkpoint_dir(record.run_id)
    profile = _profile(folder, record.run_id)
    spec = registry.spec_of(record.run_id)
    meta = checkpoints.read_meta(folder)
    family = get_family(record.family)
    kind = get_kind(family.data_kind)
    captured = is_capture(input)
    if against is not None and not captured:
        raise DataError(f"{input}: not a capture folder (capture-*.parquet); --against compares two captures")
    if against is not None and not is_capture(against):
        raise DataError(f"{against}: no capture files (capture-*.parquet) in it")
    counter = DriftCounter(profile)
    try:
        if captured:
            _count_capture(counter, kind, meta, input)
        else:
            predictor = family.load(folder, cpus=runtime.local_cpus(), precision=spec.predict.precision)
            for batch in kind.local_batches(spec, meta, input, _BATCH_ROWS):
                if batch.empty:
                    continue
                batch = batch.reset_index(drop=True)
                counter.add(kind.frame_drift_values(batch, meta), frame_predictions(predictor.predict(batch)))
        if against is not None:
            reference = DriftCounter(profile)
            _count_capture(reference, kind, meta, against)
            _enough(reference, against)
            counter = _against(counter, reference)
    except RaylineError:
        raise
    except Exception as err:
        raise map_error(err, during="drift") from None
    _enough(counter, input)
    result = counter.result(threshold)
    target = out or runtime.home() / "drift" / record.run_id
    with atomic_output(target, own=("drift.json", "drift.png")) as tmp:
        tmp.mkdir(parents=True)
        payload: dict[str, Any] = {"run_id": record.run_id, "input": input, "against": against, **result.to_dict()}
        (tmp / "drift.json").write_text(json.dumps(payload, indent=1))
        compared = against or f"run {record.run_id[:12]}"
        draw_drift(result, tmp / "drift.png", title=f"drift of {input} against {compared}")
    return DriftReport(
        run_id=record.run_id,
        input=input,
        result=result,
        folder=target,
        json_path=target / "drift.json",
        plot=target / "drift.png",
        seconds=time.perf_counter() - start,
    )


def _enough(counter: DriftCounter, source: str) -> None:
    if counter.rows == 0:
        raise DataError(f"{source}: no rows to compare")
    if counter.rows < MIN_ROWS:  # as the live monitor: it would flag noise, not drift
        raise DataError(
            f"{source}: {counter.rows} rows; PSI on fewer than {MIN_ROWS} mostly measures sampling noise",
            hint="compare a bigger sample",
        )


def _count_capture(counter: DriftCounter, kind: DataKind, meta: dict[str, Any], path: str) -> None:
    """A capture's inputs counted as the live monitor counts requests; its recorded answers as the predictions."""
    table = read_capture(path)
    for start in range(0, table.num_rows, _CAPTURE_ROWS):
        part = table.slice(start, _CAPTURE_ROWS)
        counter.add(kind.drift_values(items_of(part), meta), result_predictions(outputs_of(part)))


def _against(counter: DriftCounter, reference: DriftCounter) -> DriftCounter:
    """``counter``'s rows, with ``reference``'s shares in the same buckets as what they are compared with."""
    profile = counter.profile
    features = {
        name: replace(bins, expected=tuple(shares(reference.counts[name]).tolist()))
        for name, bins in profile.features.items()
    }
    prediction = profile.prediction
    if prediction is not None and reference.predicted.sum():
        prediction = replace(prediction, expected=tuple(shares(reference.predicted).tolist()))
    window = replace(profile, rows=reference.rows, features=features, prediction=prediction, prediction_source="model")
    moved = DriftCounter(window)
    moved.rows, moved.counts, moved.predicted = counter.rows, counter.counts, counter.predicted
    return moved
