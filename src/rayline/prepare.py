"""Turn a spec's data into what a training loop needs, on the local or the Ray Data path.

``Prepared.config`` is the loop's whole input besides data (spec, table layout, scaler), so the
same dict drives an in-process run, a Tune trial and every Ray Train worker.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from rayline import data as tables
from rayline.errors import DataError
from rayline.families.base import Family
from rayline.spec import Spec

if TYPE_CHECKING:
    import ray.data

# The in-process path holds the table in memory; past this many cells, use Ray Train workers.
LOCAL_MAX_CELLS = 400_000_000


@dataclass
class Prepared:
    config: dict[str, Any]
    fingerprint: dict[str, Any]
    rows: int
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # local path
    datasets: dict[str, ray.data.Dataset] = field(default_factory=dict)  # Ray path
    seconds: float = 0.0


def wants_local(spec: Spec) -> bool:
    """``num_workers: auto`` runs in this process unless the data is remote or too big for it."""
    if spec.scaling.num_workers != "auto":
        return False
    if spec.data.source.startswith("builtin:"):
        return True
    if spec.data.is_uri:
        return False
    source = tables.resolve_source(spec)
    fmt = tables.table_format(source, spec.data.format)
    schema, rows = tables.local_schema(source, fmt)
    return rows is None or rows * len(schema.names) <= LOCAL_MAX_CELLS


def _config(spec: Spec, family: Family, layout: tables.TableLayout, scaler: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "family": family.name,
        "spec": spec.model_dump(mode="json"),
        "layout": layout.to_dict(),
        "scaler": scaler,
    }


def _minmax(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Per-column [min, max] of the training split (the course's MinMaxScaler), saved with the model."""
    return {c: [float(frame[c].min()), float(frame[c].max())] for c in columns}


def prepare_local(spec: Spec, family: Family) -> Prepared:
    """Read, validate and split a local table in this process."""
    if family.data_kind != "table":
        raise DataError(f"family {family.name} reads images; the local table reader cannot feed it")
    start = time.perf_counter()
    source = tables.resolve_source(spec)
    fmt = tables.table_format(source, spec.data.format)
    schema, _ = tables.local_schema(source, fmt)
    features, label = tables.check_schema(schema, spec, source)
    frame = tables.read_local(source, fmt, columns=[*features, label]).to_pandas()
    layout = tables.build_layout(frame, schema, spec, source)
    train, valid = tables.split_frame(frame, spec)
    scaler = _minmax(train, spec.data.scale)
    return Prepared(
        config=_config(spec, family, layout, scaler),
        fingerprint=tables.fingerprint(source, schema, len(frame)),
        rows=len(frame),
        frames={"train": train, "valid": valid},
        seconds=time.perf_counter() - start,
    )


_LABEL_PROBE = 10_000  # distinct label values kept per batch; past 50 the task is regression anyway


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class _BatchStats:
    """Per-batch row count, non-null counts, label values and categories, as one JSON row."""

    def __init__(self, spec: Spec, features: list[str], label: str) -> None:
        self.features, self.label, self.categorical = features, label, spec.data.categorical
        self.scale, self.fraction, self.seed = spec.data.scale, spec.split.valid_fraction, spec.split.seed

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        labels = pd.unique(batch[self.label].dropna())[:_LABEL_PROBE]
        train = batch[~tables.valid_mask(batch, self.fraction, self.seed)] if self.scale else batch
        stats = {
            "rows": len(batch),
            "notna": {c: int(batch[c].notna().sum()) for c in self.features},
            "label_missing": int(batch[self.label].isna().sum()),
            "labels": [_native(v) for v in labels],
            # Native values (ints stay ints), as the local path keeps them: categories are matched by value.
            "categories": {c: [_native(v) for v in pd.unique(batch[c].dropna())] for c in self.categorical},
            "minmax": {c: [train[c].min(), train[c].max()] for c in self.scale if len(train)},
        }
        return pd.DataFrame({"stats": [json.dumps(stats, default=str)]})


def _merge_stats(parts: list[dict[str, Any]], features: list[str], categorical: list[str]) -> dict[str, Any]:
    labels: dict[Any, None] = {}
    minmax: dict[str, list[float]] = {}
    for part in parts:
        labels.update(dict.fromkeys(part["labels"]))
        for col, (lo, hi) in part["minmax"].items():
            if lo is None or hi is None or lo != lo or hi != hi:  # an all-NaN batch
                continue
            old = minmax.get(col, [float(lo), float(hi)])
            minmax[col] = [min(old[0], float(lo)), max(old[1], float(hi))]
    return {
        "minmax": minmax,
        "rows": sum(p["rows"] for p in parts),
        "notna": {c: sum(p["notna"][c] for p in parts) for c in features},
        "label_missing": sum(p["label_missing"] for p in parts),
        "labels": list(labels),
        "categories": {c: sorted({v for p in parts for v in p["categories"][c]}, key=str) for c in categorical},
    }


class _SplitFilter:
    """Keeps one side of the content-hash split (a Ray Data batch function).

    Rows are hashed on ``columns`` (features then label, as training hashed them); the output
    keeps only those columns unless ``keep_all`` (batch inference keeps every input column).
    """

    def __init__(self, columns: list[str], fraction: float, seed: int, valid: bool, *, keep_all: bool = False) -> None:
        self.columns, self.fraction, self.seed, self.valid = columns, fraction, seed, valid
        self.keep_all = keep_all

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        mask = tables.valid_mask(batch[self.columns], self.fraction, self.seed)
        return (batch if self.keep_all else batch[self.columns])[mask if self.valid else ~mask]


def prepare_ray(spec: Spec, family: Family) -> Prepared:
    """Read, validate and split with Ray Data (URIs, big tables); Ray must be running."""
    if family.data_kind != "table":
        raise DataError(f"family {family.name} reads images; the table reader cannot feed it")
    start = time.perf_counter()
    source = tables.resolve_source(spec)
    fmt = tables.table_format(source, spec.data.format)
    ds = tables.read_ray(source, fmt, shuffle_files=spec.data.shuffle == "files")
    try:
        schema = ds.schema().base_schema
    except Exception as err:
        raise DataError(f"{source}: cannot read the table ({str(err).splitlines()[0][:200]})") from None
    if schema is None or not schema.names:
        raise DataError(f"{source}: no table found (empty file or folder)")
    features, label = tables.check_schema(schema, spec, source)
    columns = [*features, label]
    ds = ds.select_columns(columns).materialize()
    # One pass over the blocks gathers everything validation needs (counts, label values, categories).
    parts = ds.map_batches(_BatchStats(spec, features, label), batch_format="pandas", zero_copy_batch=True).take_all()
    stats = _merge_stats([json.loads(p["stats"]) for p in parts], features, spec.data.categorical)
    rows = stats["rows"]
    if rows == 0:
        raise DataError(f"{source}: the table has no rows")
    empty = [c for c in features if not stats["notna"][c]]
    if empty:
        raise DataError(f"{source}: feature column {empty[0]!r} has no values (all NaN or null)")
    if stats["label_missing"]:
        raise DataError(f"{source}: label column {label!r} has {stats['label_missing']} missing values")
    objective = spec.model.objective if spec.model.family == "xgboost" else "auto"
    label_dtype = schema.field(label).type.to_pandas_dtype()
    task, classes = tables.infer_task(pd.Series(stats["labels"], dtype=label_dtype, name=label), objective, source)
    layout = tables.TableLayout(
        features=features,
        label=label,
        task=task,
        classes=classes,
        categorical={c: sorted(vals, key=str) for c, vals in stats["categories"].items()},
        dtypes={n: str(schema.field(n).type) for n in columns},
    )
    train = ds.map_batches(
        _SplitFilter(columns, spec.split.valid_fraction, spec.split.seed, valid=False), batch_format="pandas"
    )
    valid = ds.map_batches(
        _SplitFilter(columns, spec.split.valid_fraction, spec.split.seed, valid=True), batch_format="pandas"
    )
    if spec.data.shuffle == "blocks":
        train = train.randomize_block_order(seed=spec.split.seed)
    elif spec.data.shuffle == "rows":
        train = train.random_shuffle(seed=spec.split.seed)
    train, valid = train.materialize(), valid.materialize()
    scaler = {c: stats["minmax"].get(c, [0.0, 1.0]) for c in spec.data.scale}
    return Prepared(
        config=_config(spec, family, layout, scaler),
        fingerprint=tables.fingerprint(source, schema, rows),
        rows=rows,
        datasets={"train": train, "valid": valid},
        seconds=time.perf_counter() - start,
    )
