"""Batch prediction's hot path for tables: Arrow in, Arrow out, no DataFrame.

The input is cut into *parts* (a parquet file's row groups, grouped to about ``part_rows``
rows; a CSV file whole), numbered in the input's order. A part is read as a stream of Arrow
record batches, so memory holds one batch, whatever the table's size; both engines predict part
by part (in this process, or one part at a time per pool actor) and batch prediction writes one
output file per part, which is what makes a killed job resumable.

A batch becomes the model's input in one copy: each feature column is written straight into a
float64 matrix and MinMax-scaled there (float64, as training scales).

``screen`` applies the one input policy of ``POST /predict`` row by row (docs/reliability.md):
text where the model read numbers (a parquet or JSON string, even "3.5"; in CSV, which has no
types, a cell that does not read as a number), a number where it read text, a non-finite number,
and a missing value where the model does not handle missing values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rayline.data.split import SplitFilter, valid_mask
from rayline.data.table_schema import TableFormat, TableLayout, dataset_format, is_text, is_text_dtype
from rayline.errors import read_error


@dataclass(frozen=True)
class Part:
    """Rows ``first_row`` .. of input file ``fragment`` (``row_groups``: parquet's, None: all)."""

    index: int
    source: str
    fmt: TableFormat
    fragment: int
    row_groups: tuple[int, ...] | None
    first_row: int
    rows: int | None  # None: unknown until read (CSV)
    split: SplitFilter | None = None  # the spec's validation split (no --input): the rows it keeps


@lru_cache(maxsize=4)
def _dataset(source: str, fmt: TableFormat) -> Any:
    import pyarrow.dataset as pads

    try:
        return pads.dataset(source, format=dataset_format(fmt))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise read_error(source, err, "the table") from None


def _fragments(source: str, fmt: TableFormat) -> list[Any]:
    return list(_dataset(source, fmt).get_fragments())


def plan_parts(source: str, fmt: TableFormat, part_rows: int, split: SplitFilter | None = None) -> list[Part]:
    """The input's parts, in its order (the order ``pyarrow.dataset`` lists its files).

    A part is at most ``part_rows`` rows, and about a sixteenth of the table when that is less
    (whole row groups): a pool's actors then finish together, not one predicting the last big
    part alone (5M rows in 5 parts on 2 actors left one idle for a fifth of the run).
    """
    fragments = _fragments(source, fmt)
    groups = [[g.num_rows for g in f.row_groups] if fmt == "parquet" and f.row_groups else [] for f in fragments]
    target = max(1, min(part_rows, sum(map(sum, groups)) // 16))
    parts: list[Part] = []
    for f, sizes in enumerate(groups):
        first = 0  # rows are numbered within their file
        if fmt != "parquet":
            parts.append(Part(len(parts), source, fmt, f, None, first, None, split))
            continue
        ids: list[int] = []
        rows = 0
        for g, n in enumerate(sizes):
            ids.append(g)
            rows += n
            if rows >= target or g == len(sizes) - 1:
                parts.append(Part(len(parts), source, fmt, f, tuple(ids), first, rows, split))
                first, ids, rows = first + rows, [], 0
    return parts


def file_of(part: Part) -> str:
    path: str = _fragments(part.source, part.fmt)[part.fragment].path
    return path


def read_part(part: Part, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """The part's rows as record batches of at most ``batch_rows`` rows, each with its rows'
    numbers in their file (0-based)."""
    fragment = _fragments(part.source, part.fmt)[part.fragment]
    if part.row_groups is not None:
        fragment = fragment.subset(row_group_ids=list(part.row_groups))
    first = part.first_row
    try:
        for batch in fragment.to_batches(batch_size=batch_rows, use_threads=True):
            numbers = np.arange(first, first + batch.num_rows, dtype=np.int64)
            first += batch.num_rows
            if part.split is not None:
                keep = valid_mask(batch.select(part.split.columns).to_pandas(), part.split.fraction, part.split.seed)
                batch, numbers = batch.filter(pa.array(keep)), numbers[keep]
            yield batch, numbers
    except (pa.ArrowException, OSError, ValueError) as err:
        raise read_error(part.source, err, "the table") from None


# ------------------------------------------------------------------------------ model input
def _numbers(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as numpy reads it: Arrow's own buffer where it can (float64; numbers
    with no null, which the matrix's write turns into float64), else cast to float64 (nulls: NaN)."""
    t = column.type
    if t != pa.float64() and not ((pa.types.is_integer(t) or pa.types.is_floating(t)) and column.null_count == 0):
        column = pc.cast(column, pa.float64(), safe=False)
    values: np.ndarray = column.to_numpy(zero_copy_only=False)
    return values


def arrow_matrix(batch: pa.RecordBatch, layout: TableLayout) -> np.ndarray:
    """The scaled float64 model input of a batch whose features are all numeric: one copy.

    Written in row order (xgboost and LightGBM read rows), each column straight into its place
    and scaled there: building it in column order and then copying it into row order took about
    three times as long (docs/benchmarks.md, "Where evaluate's time went")."""
    x = np.empty((batch.num_rows, len(layout.features)), dtype=np.float64)
    for j, name in enumerate(layout.features):
        values = _numbers(batch.column(name))
        if name in layout.scaler:
            lo, hi = layout.scaler[name]
            np.subtract(values, lo, out=x[:, j], dtype=np.float64)  # in float64 (a float32 column too)
            x[:, j] /= (hi - lo) or 1.0
        else:
            x[:, j] = values
    return x


def arrow_outputs(raw: np.ndarray, layout: TableLayout) -> dict[str, pa.Array]:
    """The output columns batch prediction writes (``tables.output_frame``'s, as Arrow arrays)."""
    task, classes = layout.task, layout.classes
    if task == "regression":
        return {"prediction": pa.array(raw.astype(np.float64, copy=False))}
    if task == "binary":
        probability = raw.astype(np.float64, copy=False).reshape(-1)
        best = (probability >= 0.5).astype(np.int64)
        return {"probability": pa.array(probability), "predicted_label": pa.array(classes).take(pa.array(best))}
    probs = raw.reshape(len(raw), len(classes)).astype(np.float64, copy=False)
    best = probs.argmax(axis=1)
    offsets = pa.array(np.arange(0, probs.size + 1, len(classes), dtype=np.int32))
    return {
        "probability": pa.array(probs[np.arange(len(best)), best]),
        "predicted_label": pa.array(classes).take(pa.array(best)),
        "probabilities": pa.ListArray.from_arrays(offsets, pa.array(probs.reshape(-1))),
    }


# ---------------------------------------------------------------------------- the policy
@dataclass
class Screened:
    """A batch's good rows, in the form the model reads (``model_input``) and as given (``rows``),
    and its bad rows with their position in the batch and the reason."""

    model_input: pa.RecordBatch
    rows: pa.RecordBatch
    bad: pa.RecordBatch
    bad_positions: np.ndarray
    bad_reasons: list[str]


def screen(batch: pa.RecordBatch, layout: TableLayout, fmt: TableFormat) -> Screened:
    """Sort a batch's rows by the request policy (see the module docstring).

    Every policy runs it on every batch (``fail`` too), so a clean batch costs a few vectorised
    masks: no reason array is made until a row is bad, and no feature column is copied (a float
    column is read where it lies)."""
    reasons: np.ndarray | None = None
    model_input = batch
    for name in layout.features:
        col = batch.column(name)
        trained = layout.dtypes.get(name, "string" if name in layout.categorical else "double")
        infinite = None  # decimals and integers are always finite
        if pa.types.is_floating(col.type):
            values = col.to_numpy(zero_copy_only=False)  # nulls read as NaN: missing, as NaN is
            null, infinite = np.isnan(values), np.isinf(values)
        else:
            null = _nulls(col)
        if is_text_dtype(trained):
            if not is_text(col.type) and not pa.types.is_null(col.type):
                reasons = _mark(reasons, ~null, f"column {name!r}: a number where the model read text ({trained})")
        elif name not in layout.categorical or not is_text(col.type):
            if is_text(col.type):
                text = pd.Series(col.to_numpy(zero_copy_only=False), dtype=object)
                numbers = pd.to_numeric(text, errors="coerce") if fmt == "csv" else pd.Series(np.nan, index=text.index)
                reasons = _mark(
                    reasons, ~null & numbers.isna().to_numpy(), f"column {name!r}: text where the model reads numbers"
                )
                col = pa.array(numbers.to_numpy(dtype=np.float64), type=pa.float64())
                model_input = model_input.set_column(model_input.schema.get_field_index(name), name, col)
            elif infinite is not None:
                reasons = _mark(reasons, infinite, f"column {name!r}: not a finite number")
        if not layout.missing:
            reasons = _mark(
                reasons, null, f"column {name!r}: a missing value; this model does not handle missing values"
            )
    if reasons is None:
        empty = batch.slice(0, 0)
        return Screened(model_input, batch, empty, np.empty(0, np.int64), [])
    bad = reasons != None  # noqa: E711 (an object array: elementwise)
    good = pa.array(~bad)
    positions = np.flatnonzero(bad)
    return Screened(
        model_input.filter(good), batch.filter(good), batch.filter(pa.array(bad)), positions, list(reasons[bad])
    )


def _nulls(col: pa.Array) -> np.ndarray:
    """Where a (non-float) column is null; no pass over a column that has none."""
    if col.null_count == 0:
        return np.zeros(len(col), dtype=bool)
    return np.asarray(col.is_null().to_numpy(zero_copy_only=False))


def _mark(reasons: np.ndarray | None, where: np.ndarray, why: str) -> np.ndarray | None:
    """``why`` for the rows ``where`` holds that have no reason yet (the first reason stays);
    the reasons array is made at the first bad row."""
    if not where.any():
        return reasons
    if reasons is None:
        reasons = np.full(len(where), None, dtype=object)
    reasons[where & (reasons == None)] = why  # noqa: E711
    return reasons
