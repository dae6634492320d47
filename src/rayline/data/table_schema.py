"""Tables: the layout a model sees, schema checks before any work, and the two readers.

Small local tables are read with pyarrow in this process (no Ray start-up cost); URIs and big
tables go through Ray Data. Both apply the same checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from rayline.errors import DataError, read_error
from rayline.spec import Spec

if TYPE_CHECKING:
    import ray.data

TableFormat = Literal["parquet", "csv"]
# Columns pandas writes for its index; never features.
_INDEX_COLUMNS = ("__index_level_0__", "index_level_0")
_MAX_CLASSES = 50


def table_format(source: str, declared: str) -> TableFormat:
    if declared in ("parquet", "csv"):
        return declared  # type: ignore[return-value]
    if declared == "images":
        raise DataError(f"data.format is images, but {source} is read as a table here")
    lowered = source.lower().rstrip("/")
    if lowered.endswith((".csv", ".csv.gz")):
        return "csv"
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    path = Path(source)
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))}
        if ".csv" in suffixes and ".parquet" not in suffixes:
            return "csv"
    return "parquet"


# ---------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class TableLayout:
    """What the model sees: feature columns, their kinds, the label and its task."""

    features: list[str]
    label: str
    task: Literal["binary", "multiclass", "regression"]
    classes: list[Any] = field(default_factory=list)  # label values by class index
    categorical: dict[str, list[Any]] = field(default_factory=dict)  # column -> categories
    dtypes: dict[str, str] = field(default_factory=dict)  # column -> arrow type name
    scaler: dict[str, list[float]] = field(default_factory=dict)  # column -> [min, max] of the train split
    missing: bool = False  # the model takes missing values (null/NaN) in its features

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TableLayout:
        return cls(**raw)


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t))


def is_text(t: pa.DataType) -> bool:
    """A text column: string, large_string, string_view, or a dictionary of those (pandas' category)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def is_text_dtype(name: str) -> bool:
    """``is_text`` for a type as a layout stores it (Arrow's name of the type)."""
    return name in ("string", "large_string", "string_view") or name.startswith(
        ("dictionary<values=string,", "dictionary<values=large_string,", "dictionary<values=string_view,")
    )


def categorical_columns(schema: pa.Schema, spec: Spec, features: list[str], source: str = "") -> list[str]:
    """The feature columns taken as categories, for both engines: with ``data.categorical: auto``
    every text feature (booleans stay numbers), else exactly the columns listed."""
    chosen = spec.data.categorical
    if chosen == "auto":
        return [name for name in features if is_text(schema.field(name).type)]
    outside = [name for name in chosen if name not in features]
    if outside:
        where = f"{source}: " if source else ""
        raise DataError(f"{where}data.categorical column {outside[0]!r} is not a feature column")
    return list(chosen)


def check_schema(schema: pa.Schema, spec: Spec, source: str) -> tuple[list[str], str]:
    """Features and label from the schema; fails naming the column and the fix."""
    label = spec.data.label
    if not label:
        raise DataError("data.label is not set: name the column to predict", hint="e.g. --set data.label=is_big_tip")
    names = [n for n in schema.names if n not in _INDEX_COLUMNS]
    if label not in names:
        one = len(names) == 1 and next((sep for sep in (";", "\t", "|") if sep in names[0]), None)
        raise DataError(
            f"{source}: label column {label!r} not found; columns are {', '.join(names)}",
            hint=f"the header is one column with {one!r} in it: rayline reads comma-separated CSV" if one else None,
        )
    features = list(spec.data.features) if spec.data.features else [n for n in names if n != label]
    listed = [] if spec.data.categorical == "auto" else spec.data.categorical
    missing = [f for f in features + listed + spec.data.scale if f not in names]
    if missing:
        raise DataError(f"{source}: column {missing[0]!r} named in the spec is not in the data")
    if not features:
        raise DataError(f"{source}: no feature columns besides label {label!r}")
    categorical = categorical_columns(schema, spec, features, source)
    for name in features:
        kind = schema.field(name).type
        # A column of Arrow's null type holds no value at all: the counts check names it (or the
        # empty table) in words that say so, on both engines.
        if name not in categorical and not _is_numeric(kind) and not pa.types.is_null(kind):
            hint = "list it in data.categorical (or set data.categorical: auto, which takes every text column)"
            raise DataError(
                f"{source}: feature column {name!r} is {kind}, expected numbers",
                hint=f"{hint} or leave it out of data.features" if is_text(kind) else "leave it out of data.features",
            )
    for name in spec.data.scale:
        if name in categorical or not _is_numeric(schema.field(name).type):
            raise DataError(f"{source}: data.scale column {name!r} must be numeric")
    return features, label


def infer_task(
    labels: pd.Series, objective: str, source: str = ""
) -> tuple[Literal["binary", "multiclass", "regression"], list[Any]]:
    """Binary / multiclass / regression from the label values, unless the spec says."""
    where = f"{source}: " if source else ""
    what = f"label column {labels.name!r}" if labels.name is not None else "label"
    values = labels.dropna()
    uniques = pd.unique(values)
    is_float = pd.api.types.is_float_dtype(values)
    if objective in ("regression",) or objective.startswith("reg:"):
        return "regression", []
    forced_class = objective in ("binary", "multiclass") or objective.startswith(("binary:", "multi:"))
    if not forced_class and is_float and not set(np.unique(uniques)).issubset({0.0, 1.0}):
        return "regression", []
    if not forced_class and pd.api.types.is_integer_dtype(values) and len(uniques) > _MAX_CLASSES:
        return "regression", []
    if len(uniques) > _MAX_CLASSES:
        raise DataError(
            f"{where}{what} has {len(uniques)} distinct values; at most {_MAX_CLASSES} classes are supported"
        )
    classes = sorted(uniques.tolist(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise DataError(f"{where}{what} has a single value ({classes[0]!r} only); nothing to learn")
    task: Literal["binary", "multiclass"] = "binary" if len(classes) == 2 else "multiclass"
    if objective.startswith("multi") or objective == "multiclass":
        task = "multiclass"
    return task, classes


def check_counts(source: str, rows: int, notna: Mapping[str, int], label: str, label_missing: int) -> None:
    """Rows, values in every feature and a label in every row: the same words from both engines
    (``notna``: non-missing values per feature)."""
    if rows == 0:
        raise DataError(f"{source}: the table has no rows")
    empty = [name for name, n in notna.items() if n == 0]
    if empty:
        raise DataError(f"{source}: feature column {empty[0]!r} has no values (all NaN or null)")
    if label_missing:
        raise DataError(
            f"{source}: label column {label!r} has {label_missing} missing value{'s' if label_missing > 1 else ''}",
            hint="drop those rows or fill them in",
        )


def _check_values(frame: pd.DataFrame, features: list[str], label: str, source: str) -> None:
    notna = {name: int(n) for name, n in frame[features].notna().sum().items()}
    check_counts(source, len(frame), notna, label, int(frame[label].isna().sum()))


def build_layout(frame: pd.DataFrame, schema: pa.Schema, spec: Spec, source: str) -> TableLayout:
    features, label = check_schema(schema, spec, source)
    _check_values(frame, features, label, source)
    task, classes = infer_task(frame[label], spec.model.task_hint(), source)
    columns = categorical_columns(schema, spec, features, source)
    categorical = {name: sorted(pd.unique(frame[name].dropna()).tolist(), key=str) for name in columns}
    dtypes = {name: str(schema.field(name).type) for name in [*features, label]}
    return TableLayout(features, label, task, classes, categorical, dtypes, missing=spec.model.handles_missing)


# ---------------------------------------------------------------------------------- reading
def _csv_convert_options() -> Any:
    """An empty CSV cell is a missing value in every column, text ones too (Arrow reads it as
    ``""`` there, which made an empty label a class of its own); both engines read with these."""
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(strings_can_be_null=True)


def dataset_format(fmt: TableFormat) -> Any:
    import pyarrow.dataset as pads

    return pads.CsvFileFormat(convert_options=_csv_convert_options()) if fmt == "csv" else fmt


def read_local(source: str, fmt: TableFormat, columns: list[str] | None = None) -> pa.Table:
    """A local parquet/CSV file or folder, read by pyarrow in this process."""
    import pyarrow.dataset as pads

    try:
        dataset = pads.dataset(source, format=dataset_format(fmt), exclude_invalid_files=False)
        table = dataset.to_table(columns=columns)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise read_error(source, err, "the table") from None
    return table


def local_schema(source: str, fmt: TableFormat) -> tuple[pa.Schema, int | None]:
    """Schema and (for parquet) row count from metadata, without reading the data."""
    import pyarrow.dataset as pads

    try:
        dataset = pads.dataset(source, format=dataset_format(fmt))
        schema = dataset.schema
        rows = dataset.count_rows() if fmt == "parquet" else None
    except (pa.ArrowException, OSError, ValueError) as err:
        raise read_error(source, err, "the table") from None
    if not schema.names:
        raise DataError(f"{source}: no table found (empty file or folder)")
    return schema, rows


def read_ray(source: str, fmt: TableFormat, *, shuffle_files: bool = False) -> ray.data.Dataset:
    """A parquet/CSV file, folder or URI as a Ray Dataset (Ray must be initialised)."""
    import ray.data

    try:
        if fmt == "csv":
            return ray.data.read_csv(
                source, shuffle="files" if shuffle_files else None, convert_options=_csv_convert_options()
            )
        return ray.data.read_parquet(source, shuffle="files" if shuffle_files else None)
    except Exception as err:  # Ray wraps Arrow/S3 errors in several exception types
        raise read_error(source, err, "the table") from None


def fingerprint(source: str, schema: pa.Schema, rows: int) -> dict[str, Any]:
    """What the model was trained on, for the registry's lineage."""
    info: dict[str, Any] = {"source": source, "rows": rows, "columns": len(schema.names)}
    info["schema"] = ", ".join(f"{f.name}:{f.type}" for f in schema)
    path = Path(source)
    if path.is_file():
        stat = path.stat()
        info["bytes"] = stat.st_size
        info["mtime"] = int(stat.st_mtime)
    return info
