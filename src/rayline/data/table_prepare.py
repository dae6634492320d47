"""A table, read, checked and split for training: in this process, or with Ray Data."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pandas as pd

from rayline.data import table_schema as tables
from rayline.data.base import Prepared, resolve_source
from rayline.data.split import SplitFilter, valid_mask
from rayline.errors import DataError, read_error
from rayline.spec import Spec

_LABEL_PROBE = 10_000  # distinct label values kept per batch; past 50 the task is regression anyway


def _config(spec: Spec, layout: tables.TableLayout) -> dict[str, Any]:
    return {"spec": spec.model_dump(mode="json"), "layout": layout.to_dict()}


def split_frame(frame: pd.DataFrame, spec: Spec) -> tuple[pd.DataFrame, pd.DataFrame]:
    mask = valid_mask(frame, spec.split.valid_fraction, spec.split.seed)
    train, valid = frame[~mask], frame[mask]
    if train.empty or valid.empty:
        raise DataError(
            f"split.valid_fraction={spec.split.valid_fraction} leaves {len(train)} train and {len(valid)} "
            "valid rows; need at least one of each"
        )
    return train.reset_index(drop=True), valid.reset_index(drop=True)


def _minmax(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Per-column [min, max] of the training split (the course's MinMaxScaler), saved with the model."""
    return {c: [float(frame[c].min()), float(frame[c].max())] for c in columns}


def prepare_local(spec: Spec) -> Prepared:
    """Read, validate and split a local table in this process."""
    start = time.perf_counter()
    source = resolve_source(spec)
    fmt = tables.table_format(source, spec.data.format)
    schema, _ = tables.local_schema(source, fmt)
    features, label = tables.check_schema(schema, spec, source)
    frame = tables.read_local(source, fmt, columns=[*features, label]).to_pandas()
    layout = tables.build_layout(frame, schema, spec, source)
    train, valid = split_frame(frame, spec)
    layout = replace(layout, scaler=_minmax(train, spec.data.scale))
    return Prepared(
        config=_config(spec, layout),
        fingerprint=tables.fingerprint(source, schema, len(frame)),
        rows=len(frame),
        frames={"train": train, "valid": valid},
        seconds=time.perf_counter() - start,
    )


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class _BatchStats:
    """Per-batch row count, non-null counts, label values and categories, as one JSON row."""

    def __init__(self, spec: Spec, features: list[str], label: str, categorical: list[str]) -> None:
        self.features, self.label, self.categorical = features, label, categorical
        self.scale, self.fraction, self.seed = spec.data.scale, spec.split.valid_fraction, spec.split.seed

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        labels = pd.unique(batch[self.label].dropna())[:_LABEL_PROBE]
        train = batch[~valid_mask(batch, self.fraction, self.seed)] if self.scale else batch
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


def prepare_ray(spec: Spec) -> Prepared:
    """Read, validate and split with Ray Data (URIs, big tables); Ray must be running."""
    start = time.perf_counter()
    source = resolve_source(spec)
    fmt = tables.table_format(source, spec.data.format)
    ds = tables.read_ray(source, fmt, shuffle_files=spec.data.shuffle == "files")
    try:
        schema = ds.schema().base_schema
    except Exception as err:  # Ray wraps Arrow's and the filesystem's errors in its own types
        raise read_error(source, err, "the table") from None
    if schema is None or not schema.names:
        raise DataError(f"{source}: no table found (empty file or folder)")
    features, label = tables.check_schema(schema, spec, source)
    categorical = tables.categorical_columns(schema, spec, features, source)
    columns = [*features, label]
    ds = ds.select_columns(columns).materialize()
    # One pass over the blocks gathers everything validation needs (counts, label values, categories).
    stats_of = _BatchStats(spec, features, label, categorical)
    parts = ds.map_batches(stats_of, batch_format="pandas", zero_copy_batch=True).take_all()
    stats = _merge_stats([json.loads(p["stats"]) for p in parts], features, categorical)
    rows = stats["rows"]
    tables.check_counts(source, rows, stats["notna"], label, stats["label_missing"])
    label_dtype = schema.field(label).type.to_pandas_dtype()
    labels = pd.Series(stats["labels"], dtype=label_dtype, name=label)
    task, classes = tables.infer_task(labels, spec.model.task_hint(), source)
    layout = tables.TableLayout(
        features=features,
        label=label,
        task=task,
        classes=classes,
        categorical={c: sorted(vals, key=str) for c, vals in stats["categories"].items()},
        dtypes={n: str(schema.field(n).type) for n in columns},
        scaler={c: stats["minmax"].get(c, [0.0, 1.0]) for c in spec.data.scale},
        missing=spec.model.handles_missing,
    )
    fraction, seed = spec.split.valid_fraction, spec.split.seed
    train = ds.map_batches(SplitFilter(columns, fraction, seed, valid=False), batch_format="pandas")
    valid = ds.map_batches(SplitFilter(columns, fraction, seed, valid=True), batch_format="pandas")
    if spec.data.shuffle == "blocks":
        train = train.randomize_block_order(seed=seed)
    elif spec.data.shuffle == "rows":
        train = train.random_shuffle(seed=seed)
    return Prepared(
        config=_config(spec, layout),
        fingerprint=tables.fingerprint(source, schema, rows),
        rows=rows,
        datasets={"train": train.materialize(), "valid": valid.materialize()},
        seconds=time.perf_counter() - start,
    )
