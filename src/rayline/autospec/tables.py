"""Deciding from a table: a sample of its rows, the label, the task and which columns are features."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from rayline.autospec.plan import Plan, absolute, add_model, choose_family
from rayline.data.table_schema import infer_task, is_text, read_local
from rayline.errors import DataError, SpecError, read_error

SAMPLE_ROWS = 10_000  # rows the decisions look at; a bigger table is sampled
WHOLE_READ_BYTES = 64 * 1024**2  # local tables up to this size are read whole, then sampled at random
LABEL_NAMES = ("target", "label", "class", "y", "outcome")  # a column named exactly so is the label
LABEL_WORDS = frozenset({"target", "label", "class", "outcome"})  # ... or with one of these words in its name
ID_MIN_ROWS = 50  # fewer sampled rows than this: a column unique on every row may be chance, not an id


def _sample(source: str, fmt: Literal["parquet", "csv"]) -> tuple[pa.Table, int | None, str]:
    """Up to SAMPLE_ROWS rows, the table's row count when known, and how they were picked."""
    local = "://" not in source
    size = _local_bytes(source) if local else None
    if size is not None and size <= WHOLE_READ_BYTES:
        table = read_local(source, fmt)
        rows = table.num_rows
        if rows <= SAMPLE_ROWS:
            return table, rows, "every row"
        picked = pd.Series(range(rows)).sample(SAMPLE_ROWS, random_state=0).sort_values().to_numpy()
        return table.take(picked), rows, f"{SAMPLE_ROWS:,} rows picked at random"
    # Too big (or remote) to read whole for a look: the first rows, as the reader finds them.
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads

    # As rayline.data.table_schema reads CSV: an empty cell is missing, in text columns too.
    options = pacsv.ConvertOptions(strings_can_be_null=True)
    try:
        dataset = pads.dataset(source, format=pads.CsvFileFormat(convert_options=options) if fmt == "csv" else fmt)
        table = dataset.head(SAMPLE_ROWS)
        rows = dataset.count_rows() if fmt == "parquet" else None
    except (pa.ArrowException, OSError, ValueError) as err:
        raise read_error(source, err, "the table") from None
    return table, rows, f"the first {table.num_rows:,} rows"


def _local_bytes(source: str) -> int:
    path = Path(source).expanduser()
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _count(n: int | None, sample: int) -> str:
    return f"{n:,} rows" if n is not None else f"{sample:,}+ rows" if sample >= SAMPLE_ROWS else f"{sample:,} rows"


def decide_table(
    plan: Plan, source: str, fmt: Literal["parquet", "csv"], label: str | None, family: str | None
) -> None:
    table, rows, picked = _sample(source, fmt)
    if table.num_rows == 0:
        raise DataError(f"{source}: the table has no rows")
    frame = table.to_pandas()
    names = [n for n in table.schema.names if not n.startswith("__index_level_")]
    what = "CSV" if fmt == "csv" else "parquet"
    plan.say(f"{source}: a table ({what}, {_count(rows, table.num_rows)}; decided from {picked})")
    plan.set("data.source", absolute(source), f"a {what} table")
    plan.set("data.format", fmt)
    chosen, why = pick_label(frame, names, label, source)
    plan.set("data.label", chosen, why)
    plan.say(f"label: {chosen} ({why})")
    model = choose_family(family, "table", source)
    task, classes = infer_task(frame[chosen], "auto", source)
    plan.task = task
    what = _task_why(task, classes, frame[chosen])
    plan.say(f"task: {task} ({what})")
    features, text, left = _features(table.schema, frame, chosen, names)
    if not features:
        raise DataError(f"{source}: no feature columns left besides label {chosen!r}: {_reasons(left)}")
    plan.categorical, plan.left_out = text, left
    notes = [f"{len(features)} of {len(names) - 1} columns"]
    if text:
        notes.append(f"text, so categories (data.categorical: auto): {', '.join(text)}")
    if left:
        notes.append(f"left out: {_reasons(left)}")
    plan.set("data.features", features, "; ".join(notes))
    plan.say(f"features: {len(features)} kept" + (f"; text, so categorical: {', '.join(text)}" if text else ""))
    if left:
        plan.say(f"left out: {_reasons(left)}")
    plan.set(
        "split",
        {"valid_fraction": 0.2, "seed": 42},
        "a fifth of the rows held out: early stopping, tuning and the report",
    )
    add_model(plan, model)


def _words(name: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def pick_label(frame: pd.DataFrame, names: Sequence[str], given: str | None, source: str) -> tuple[str, str]:
    if given is not None:
        if given not in names:
            raise SpecError(f"{source}: --label {given!r}: no such column; columns are {', '.join(names)}")
        return given, "given with --label"
    exact = sorted((n for n in names if n.lower() in LABEL_NAMES), key=lambda n: LABEL_NAMES.index(n.lower()))
    if exact:
        others = f"; also {', '.join(exact[1:])}: --label picks another" if len(exact) > 1 else ""
        return exact[0], f"named like a label{others}"
    worded = [n for n in names if LABEL_WORDS & set(_words(n))]
    if len(worded) == 1:
        return worded[0], "its name says label"
    candidates = worded or _candidates(frame, names)
    expected = ", ".join(LABEL_NAMES[:-1]) + f" or {LABEL_NAMES[-1]}"
    raise SpecError(
        f"{source}: label: no column is named {expected}; pass --label COL, e.g. one of: {', '.join(candidates)}"
    )


def _candidates(frame: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """Columns a label is likely among: few distinct values (fewest first), and the last column."""
    counts = {n: int(frame[n].nunique()) for n in names}
    few = sorted((n for n in names if 2 <= counts[n] <= 20), key=lambda n: counts[n])[:4]
    shown = [f"{n} ({counts[n]} values)" for n in few]
    if names and names[-1] not in few:
        shown.append(f"{names[-1]} (last column)")
    return shown


def _task_why(task: str, classes: list[Any], labels: pd.Series) -> str:
    if task == "regression":
        return f"numbers, {labels.nunique():,} distinct values in the sample"
    shown = ", ".join(str(c) for c in classes[:6]) + (", ..." if len(classes) > 6 else "")
    return f"{len(classes)} values: {shown}"


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t))


def _features(
    schema: pa.Schema, frame: pd.DataFrame, label: str, names: Sequence[str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """(features kept, the text ones among them, column -> why left out)."""
    kept: list[str] = []
    text: list[str] = []
    left: dict[str, str] = {}
    rows = len(frame)
    for name in names:
        if name == label:
            continue
        t, values = schema.field(name).type, frame[name]
        distinct = int(values.nunique(dropna=True))
        if distinct == 0:
            left[name] = "no values"
        elif distinct == 1 and not values.isna().any():
            left[name] = f"constant: {values.iloc[0]} on every row"
        elif (is_text(t) or pa.types.is_integer(t)) and rows >= ID_MIN_ROWS and distinct == rows:
            left[name] = "a different value on every row: an id"
        elif is_text(t):
            kept.append(name)
            text.append(name)
        elif _is_numeric(t):
            kept.append(name)
        else:
            left[name] = f"{t}: neither numbers nor text"
    return kept, text, left


def _reasons(left: dict[str, str]) -> str:
    return "; ".join(f"{name} ({why})" for name, why in left.items())
