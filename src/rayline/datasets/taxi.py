"""Synthetic NYC taxi trips with the schema of the course's ``nyc_taxi_2021.parquet``.

The real file (``TAXI_S3_URI``) needs a network; this generator gives the same columns and
dtypes with realistic marginals, so every stage can run offline:

- ``hour`` 0-23 with morning/evening rush peaks and a quiet 3-5 am; ``day_of_week`` 1-7
  (1 = Monday ... 7 = Sunday), fewer trips on Sunday.
- ``passenger_count`` mostly 1 (as a float, like the real file); ~3% airport trips.
- ``trip_distance`` (miles) log-normal, heavy-tailed; airport trips ~17 miles.
- ``trip_duration`` (seconds) from distance and a traffic speed that drops in rush hours and
  rises at night, with noise and a pickup overhead.
- ``fare_amount`` from the 2021 meter ($2.50 + $2.50/mile + waiting time), JFK flat fare,
  rounded to $0.50.

``is_big_tip`` (tip > 20% of fare) is drawn from a known probability, so a benchmark can hold a
model's AUC against the best any model could reach on this data (``tip_probability``):

    logit = -0.10 - 1.10*log(fare/12) + 0.90*evening(17-21h) - 0.90*night(0-4h)
            + 0.60*morning_commute(weekday 7-9h) - 0.70*group(>=3 passengers)
            - 1.00*airport + 0.50*weekend - 0.60*slow_traffic(<7 mph)
    p_card = 0.80 - 0.20*night - 0.10*group         (cash trips record no tip at all)
    tip_probability = p_card * sigmoid(logit)

The big-tip rate lands near 0.45 and the best possible AUC near 0.69: learnable, never perfectly
(label noise and the unseen payment type).

``trip_scale`` lengthens (or shortens) every trip: the distance is multiplied before it is
clipped and rounded, and the duration, fare and tip follow from it as above. It makes shifted
tables for drift checks (``rayline data taxi --seed 7 --trip-scale 1.8``); at 1.0 the output is
the same, byte for byte, as without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from rayline.atomic import atomic_output
from rayline.errors import DataError

TAXI_COLUMNS = (
    "passenger_count",
    "trip_distance",
    "fare_amount",
    "trip_duration",
    "hour",
    "day_of_week",
    "is_big_tip",
)
TAXI_SCHEMA = pa.schema(
    [
        ("passenger_count", pa.float64()),
        ("trip_distance", pa.float64()),
        ("fare_amount", pa.float64()),
        ("trip_duration", pa.int64()),
        ("hour", pa.int64()),
        ("day_of_week", pa.int64()),
        ("is_big_tip", pa.bool_()),
    ]
)
TRUTH_COLUMN = "tip_probability"
_CHUNK = 1_000_000  # fixed, so output for a seed does not depend on how it was chunked

_HOUR_WEIGHTS = np.array(
    [
        3.0,
        2.2,
        1.6,
        1.0,
        0.7,
        0.8,
        1.7,
        3.2,
        4.3,
        4.5,
        4.3,
        4.5,
        4.7,
        4.8,
        5.0,
        5.1,
        5.3,
        5.9,
        6.4,
        6.2,
        5.6,
        5.1,
        4.7,
        3.9,
    ]
)
_DAY_WEIGHTS = np.array([0.95, 1.0, 1.05, 1.1, 1.15, 1.0, 0.75])  # Mon..Sun
_PASSENGERS = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
_PASSENGER_WEIGHTS = np.array([0.01, 0.71, 0.15, 0.04, 0.02, 0.04, 0.03])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _chunk(rows: int, rng: np.random.Generator, trip_scale: float = 1.0) -> dict[str, np.ndarray]:
    hour = rng.choice(24, size=rows, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    day = rng.choice(7, size=rows, p=_DAY_WEIGHTS / _DAY_WEIGHTS.sum()) + 1
    passengers = rng.choice(_PASSENGERS, size=rows, p=_PASSENGER_WEIGHTS / _PASSENGER_WEIGHTS.sum())
    airport = rng.random(rows) < 0.03

    distance: np.ndarray = rng.lognormal(mean=np.log(1.7), sigma=0.75, size=rows)
    distance = np.where(airport, rng.normal(17.5, 2.0, size=rows), distance)
    # Scaling draws nothing: every other column's draws stay the same whatever the scale.
    distance = np.round(np.clip(distance * trip_scale, 0.01, 80.0), 2)

    weekend = day >= 6
    rush = ~weekend & (((hour >= 7) & (hour <= 9)) | ((hour >= 16) & (hour <= 19)))
    night = hour <= 4
    speed = 11.0 * np.where(rush, 0.72, 1.0) * np.where(night | (hour >= 22), 1.45, 1.0)
    speed = speed * np.where(weekend, 1.1, 1.0) * np.where(airport, 1.6, 1.0)
    speed = speed * rng.lognormal(0.0, 0.25, size=rows)
    duration = np.maximum(30, np.round(distance / speed * 3600 + rng.gamma(2.0, 45.0, size=rows)))
    duration = duration.astype(np.int64)

    minutes = duration / 60.0
    slow_minutes = np.maximum(0.0, minutes - distance / 12.0 * 60.0)
    fare = 2.5 + 2.5 * distance + 0.5 * slow_minutes
    jfk_flat = airport & (rng.random(rows) < 0.5)
    fare = np.where(jfk_flat, 52.0, np.round(fare * 2) / 2)

    group = passengers >= 3
    evening = (hour >= 17) & (hour <= 21)
    morning = ~weekend & (hour >= 7) & (hour <= 9)
    slow = (distance / (duration / 3600.0)) < 7.0
    logit = (
        -0.10
        - 1.10 * np.log(fare / 12.0)
        + 0.90 * evening
        - 0.90 * night
        + 0.60 * morning
        - 0.70 * group
        - 1.00 * airport
        + 0.50 * weekend
        - 0.60 * slow
    )
    p_card = 0.80 - 0.20 * night - 0.10 * group
    truth = p_card * _sigmoid(logit)
    return {
        "passenger_count": passengers.astype(np.float64),
        "trip_distance": distance.astype(np.float64),
        "fare_amount": fare.astype(np.float64),
        "trip_duration": duration,
        "hour": hour.astype(np.int64),
        "day_of_week": day.astype(np.int64),
        "is_big_tip": rng.random(rows) < truth,
        TRUTH_COLUMN: truth,
    }


def _schema(with_truth: bool) -> pa.Schema:
    return TAXI_SCHEMA.append(pa.field(TRUTH_COLUMN, pa.float64())) if with_truth else TAXI_SCHEMA


def iter_taxi(rows: int, *, seed: int = 0, with_truth: bool = False, trip_scale: float = 1.0) -> Iterator[pa.Table]:
    """Yield the trips as Arrow tables of at most one million rows each."""
    if rows < 1:
        raise DataError(f"rows must be at least 1, got {rows}")
    if not (0 < trip_scale < float("inf")):
        raise DataError(f"trip_scale must be a positive number, got {trip_scale}")
    schema = _schema(with_truth)
    done = 0
    index = 0
    while done < rows:
        n = min(_CHUNK, rows - done)
        cols = _chunk(n, np.random.default_rng([seed, index]), trip_scale)
        yield pa.table({name: cols[name] for name in schema.names}, schema=schema)
        done += n
        index += 1


def generate_taxi(rows: int, *, seed: int = 0, with_truth: bool = False, trip_scale: float = 1.0) -> pa.Table:
    """The whole table in memory; deterministic for a given ``seed`` (and ``trip_scale``)."""
    return pa.concat_tables(list(iter_taxi(rows, seed=seed, with_truth=with_truth, trip_scale=trip_scale)))


def write_taxi(
    out: str | os.PathLike[str],
    rows: int,
    *,
    seed: int = 0,
    with_truth: bool = False,
    overwrite: bool = True,
    trip_scale: float = 1.0,
) -> Path:
    """Write ``rows`` trips to a parquet (or ``.csv``) file atomically; returns the path."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = Path(out).expanduser().resolve()
    if target.suffix.lower() not in (".parquet", ".csv"):
        raise DataError(f"--out {out}: expected a .parquet or .csv file name")
    schema = _schema(with_truth)
    with atomic_output(target, overwrite=overwrite) as tmp:
        if target.suffix.lower() == ".csv":
            with pacsv.CSVWriter(str(tmp), schema) as writer:
                for table in iter_taxi(rows, seed=seed, with_truth=with_truth, trip_scale=trip_scale):
                    writer.write_table(table)
        else:
            with pq.ParquetWriter(str(tmp), schema, compression="zstd") as writer:
                for table in iter_taxi(rows, seed=seed, with_truth=with_truth, trip_scale=trip_scale):
                    writer.write_table(table, row_group_size=256 * 1024)
    return target
