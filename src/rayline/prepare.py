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
from rayline import images
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
    skipped: list[str] = field(default_factory=list)  # undecodable files left out (on_bad_file: skip)


def wants_local(spec: Spec) -> bool:
    """``num_workers: auto`` runs in this process unless the data is too big for it (or remote images or CSV)."""
    if spec.scaling.num_workers != "auto":
        return False
    if spec.data.source.startswith("builtin:"):
        return True
    source = tables.resolve_source(spec)
    if spec.model.family == "resnet18":
        return not spec.data.is_uri and _images_fit(spec, source)
    fmt = tables.table_format(source, spec.data.format)
    if spec.data.is_uri and fmt != "parquet":
        return False  # a remote CSV's size is unknown until it is read
    # A remote parquet table's size is in its footers: a small one is read here whole, like a
    # local one, instead of paying a Train run's start-up (600 rows on S3: 33 s -> 4.5 s).
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
    """Read, validate and split a local table (or image folder) in this process."""
    if family.data_kind == "images":
        return _prepare_images_local(spec, family)
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
    if family.data_kind == "images":
        return _prepare_images_ray(spec, family)
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


# ------------------------------------------------------------------------------------ images
# The in-process path holds decoded images in memory; past this many bytes, use Ray Train workers.
LOCAL_MAX_IMAGE_BYTES = 2 * 1024**3


def _images_fit(spec: Spec, source: str) -> bool:
    from pathlib import Path

    if images.source_kind(source, spec.data.format) == "parquet":
        return Path(source).is_file() and Path(source).stat().st_size * 20 <= LOCAL_MAX_IMAGE_BYTES
    files = images.scan_folder(source)
    if spec.data.image.size:
        h, w = spec.data.image.size
        channels = 1 if spec.data.image.mode == "L" else 3
        return len(files) * h * w * channels <= LOCAL_MAX_IMAGE_BYTES
    return len(files) <= 200_000


def _image_fingerprint(source: str, layout: images.ImageLayout, rows: int) -> dict[str, Any]:
    info: dict[str, Any] = {"source": source, "rows": rows, "classes": len(layout.classes), "images": layout.describe()}
    if layout.skipped:
        info["skipped"] = len(layout.skipped)
    return info


def _prepare_images_local(spec: Spec, family: Family) -> Prepared:
    from rayline.runtime import local_cpus

    start = time.perf_counter()
    source = tables.resolve_source(spec)
    frame, layout = images.read_local(spec, source, threads=local_cpus())
    train, valid = images.split_local(frame, spec)
    return Prepared(
        config={"family": family.name, "spec": spec.model_dump(mode="json"), "layout": layout.to_dict()},
        fingerprint=_image_fingerprint(source, layout, len(frame)),
        rows=len(frame),
        frames={"train": train, "valid": valid},
        seconds=time.perf_counter() - start,
        skipped=layout.skipped,
    )


def _prepare_images_ray(spec: Spec, family: Family) -> Prepared:
    start = time.perf_counter()
    source = tables.resolve_source(spec)
    ds, size = images.read_ray(spec, source)
    try:
        ds = ds.materialize()
        names = [str(v) for v in ds.unique("label")]
    except DataError:
        raise
    except Exception as err:
        from rayline.inference import _map_error

        mapped = _map_error(err)
        raise mapped if isinstance(mapped, DataError) else DataError(f"{source}: {mapped}") from None
    classes = images.check_classes(names, source)
    rows = ds.count()
    skipped: list[str] = []
    local_folder = not spec.data.is_uri and images.source_kind(source, spec.data.format) == "folder"
    if spec.data.on_bad_file == "skip" and local_folder:
        # Ray Data dropped them in its tasks; count what went missing against the folder.
        total = len(images.scan_folder(source))
        skipped = [f"{total - rows} files"] if total > rows else []
    layout = images.ImageLayout(classes, spec.data.image.mode, size, spec.data.image.mean, spec.data.image.std)
    to_index = images.LabelIndex(classes)
    fraction, seed = spec.split.valid_fraction, spec.split.seed
    train = ds.map_batches(images.SplitFilter(fraction, seed, valid=False), batch_format="pandas")
    valid = ds.map_batches(images.SplitFilter(fraction, seed, valid=True), batch_format="pandas")
    train = train.map_batches(to_index, batch_format="pandas")
    valid = valid.map_batches(to_index, batch_format="pandas")
    if spec.data.shuffle == "blocks":
        train = train.randomize_block_order(seed=seed)
    elif spec.data.shuffle == "rows":
        train = train.random_shuffle(seed=seed)
    train, valid = train.materialize(), valid.materialize()
    if train.count() == 0 or valid.count() == 0:
        raise DataError(f"split.valid_fraction={fraction} leaves no train or no valid images in {source}")
    return Prepared(
        config={"family": family.name, "spec": spec.model_dump(mode="json"), "layout": layout.to_dict()},
        fingerprint=_image_fingerprint(source, layout, rows),
        rows=rows,
        datasets={"train": train, "valid": valid},
        seconds=time.perf_counter() - start,
        skipped=skipped,
    )
