"""The table data kind: parquet and CSV files, folders and URIs, one row per example.

Owns the read (``table_schema``), the split and training inputs (``table_prepare``), the rows
batch prediction reads on either engine, the model-input helpers families share (scaled and
typed feature columns, encoded labels) and the ``POST /predict`` body: a JSON array of records
with every feature typed as the model saw it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    Strict,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from rayline.data import table_batches, table_drift, table_prepare, tensors
from rayline.data.base import Prepared, Target, input_source, resolve_source
from rayline.data.split import SplitFilter
from rayline.data.table_schema import (
    TableLayout,
    check_schema,
    is_text,
    is_text_dtype,
    local_schema,
    read_local,
    read_ray,
    table_format,
)
from rayline.data.tensors import TensorMeta
from rayline.errors import DataError
from rayline.spec import Spec

if TYPE_CHECKING:
    import ray.data

MAX_RECORDS = 10_000  # per request; bigger jobs belong to `rayline predict`
# Past these sizes a table goes to Ray: training holds it in memory whole, batch prediction
# reads it whole.
LOCAL_MAX_CELLS = 400_000_000
LOCAL_MAX_ROWS = 2_000_000
LOCAL_MAX_CSV_BYTES = 256 * 1024**2


# ------------------------------------------------------------------------- model inputs
def features_frame(frame: pd.DataFrame, layout: TableLayout) -> pd.DataFrame:
    """The model's input columns, scaled and typed as at training time."""
    missing = [c for c in layout.features if c not in frame.columns]
    if missing:
        raise DataError(f"input has no column {missing[0]!r}; the model needs {', '.join(layout.features)}")
    x = frame[layout.features].copy()
    for col in layout.features:
        # Numbers as numpy floats: Ray Data hands pandas Arrow-backed or nullable columns, and a
        # text column must fail here, naming itself, the same on both engines. Text is refused
        # even where it reads as a number ("3.5"), as POST /predict refuses it (one input policy).
        dtype = x[col].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype)
        trained = layout.dtypes.get(col, "double")
        if col in layout.categorical:
            if is_text_dtype(trained) and numeric and x[col].notna().any():
                bad = x[col][x[col].notna()].tolist()[0]  # a Python value: 7, not np.int64(7)
                raise DataError(f"input column {col!r} holds {bad!r}; the model was trained on text ({trained})")
            continue
        if numeric and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
            continue
        text = None if numeric else next((v for v in x[col] if isinstance(v, str | bytes)), None)
        if text is not None:
            raise DataError(f"input column {col!r} holds text ({text!r}); the model was trained on numbers ({trained})")
        try:
            x[col] = x[col].astype("float64")
        except (TypeError, ValueError):
            bad = next(v for v in x[col] if not _is_number(v))
            raise DataError(f"input column {col!r} holds {bad!r}; the model expects numbers") from None
    for col, (lo, hi) in layout.scaler.items():
        x[col] = (x[col].astype("float64") - lo) / ((hi - lo) or 1.0)
    for col, categories in layout.categorical.items():
        x[col] = pd.Categorical(x[col], categories=categories)
    return x


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def encode_label(values: pd.Series, layout: TableLayout) -> np.ndarray:
    """Class indexes (the layout's order), or floats for regression."""
    if layout.task == "regression":
        floats: np.ndarray = values.to_numpy(dtype=np.float64)
        return floats
    codes: np.ndarray = np.asarray(pd.Categorical(values, categories=layout.classes).codes)
    if (codes < 0).any():
        unknown = values[codes < 0].iloc[0]
        raise DataError(f"label value {unknown!r} was not seen when the classes were set up")
    return codes.astype(np.int32)


def record_matrix(records: Sequence[Any], layout: TableLayout) -> np.ndarray:
    """Decoded request records (dicts) -> a scaled float32 matrix (tables without categorical features).

    The hot path of online serving: no DataFrame on the way (building one cost more than
    the prediction).
    """
    names = layout.features
    matrix = np.array([[r[n] for n in names] for r in records], dtype=np.float32)
    for col, (lo, hi) in layout.scaler.items():
        j = names.index(col)
        matrix[:, j] = (matrix[:, j] - lo) / ((hi - lo) or 1.0)
    return matrix


def records_frame(records: Sequence[Any], layout: TableLayout) -> pd.DataFrame:
    """Decoded request records (dicts) -> the model's input columns (any feature types)."""
    frame = pd.DataFrame([{n: r[n] for n in layout.features} for r in records], columns=layout.features)
    return features_frame(frame, layout)


# ------------------------------------------------------------------------ model outputs
def output_columns(raw: np.ndarray, layout: TableLayout) -> dict[str, np.ndarray]:
    """A model's raw scores -> prediction (regression), or probability and predicted label (+ each
    class's probability for multiclass). ``raw``: the prediction, P(second class) for binary, or
    one row of class probabilities per example."""
    task, classes = layout.task, layout.classes
    if task == "regression":
        return {"prediction": raw.astype(np.float64)}
    if task == "binary":
        probability = raw.astype(np.float64)
        return {"probability": probability, "predicted_label": np.where(probability >= 0.5, classes[1], classes[0])}
    probs = raw.reshape(len(raw), len(classes)).astype(np.float64)
    best = probs.argmax(axis=1)
    return {
        "probability": probs[np.arange(len(best)), best],
        "predicted_label": np.asarray(classes, dtype=object)[best],
        "probabilities": probs,
    }


def output_frame(raw: np.ndarray, layout: TableLayout) -> pd.DataFrame:
    """``output_columns`` as batch prediction writes them (class probabilities: one array per row)."""
    columns: dict[str, Any] = output_columns(raw, layout)
    if "probabilities" in columns:
        columns["probabilities"] = list(columns["probabilities"])
    return pd.DataFrame(columns)


def output_records(raw: np.ndarray, layout: TableLayout) -> list[dict[str, Any]]:
    """``output_columns`` as serving answers them: one JSON-ready record per example."""
    columns = output_columns(raw, layout)
    # ``tolist`` turns numpy values into JSON-ready Python ones in one C loop.
    if layout.task == "regression":
        return [{"prediction": v} for v in columns["prediction"].tolist()]
    pairs = zip(columns["predicted_label"].tolist(), columns["probability"].tolist(), strict=True)
    if layout.task == "binary":
        return [{"label": label, "probability": p} for label, p in pairs]
    names = [str(c) for c in layout.classes]
    return [
        {"label": label, "probability": p, "probabilities": dict(zip(names, row, strict=True))}
        for (label, p), row in zip(pairs, columns["probabilities"].tolist(), strict=True)
    ]


def _python_type(name: str, layout: TableLayout) -> type:
    """The JSON type of a feature's (or the label's) values: a text column's, categorical or not, is
    a string (any string: one not seen in training is a missing value); a column listed as
    categorical by hand keeps its own type (an integer category is sent as an integer)."""
    dtype = layout.dtypes.get(name, "string" if name in layout.categorical else "double")
    if is_text_dtype(dtype):
        return str
    if dtype == "bool":
        return bool
    if dtype.startswith(("int", "uint")):
        return int
    return float


def _finite(value: float | None) -> float | None:
    if value is not None and math.isinf(value):
        raise PydanticCustomError(
            "finite_number", "must be a finite number (Infinity, and numbers past a double's range like 1e400, are not)"
        )
    return value


def _present(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        raise PydanticCustomError(
            "missing_value", "is missing (null or NaN); this model does not handle missing values"
        )
    return value


_INT64 = Field(ge=-(2**63), le=2**63 - 1)


def _whole(value: Any) -> Any:
    """2.0 is an integer to JSON Schema (and to JavaScript): take it as 2; 2.5 and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _request_type(name: str, layout: TableLayout) -> Any:
    """The type a request's value for feature ``name`` must have (strict: JSON types as sent)."""
    base = _python_type(name, layout)
    if base is float:
        checks = [AfterValidator(_finite)] if layout.missing else [AfterValidator(_finite), AfterValidator(_present)]
        typed: Any = Annotated[float | None if layout.missing else float, Strict(), *checks]
        return typed
    strict: Any = (
        Annotated[base, Strict(), _INT64, BeforeValidator(_whole)] if base is int else Annotated[base, Strict()]
    )
    return strict | None if layout.missing else strict


def layout_of(meta: Mapping[str, Any]) -> TableLayout:
    raw = meta.get("layout")
    if not isinstance(raw, Mapping) or "features" not in raw:
        raise DataError(f"checkpoint of a {meta.get('family')} model has no table layout")
    return TableLayout.from_dict(raw)


# ------------------------------------------------------------------------------ the plug
class TableKind:
    name = "table"
    output_drop: tuple[str, ...] = ()

    def fits_in_process(self, spec: Spec) -> bool:
        if spec.data.source.startswith("builtin:"):
            return True
        source = resolve_source(spec)
        fmt = table_format(source, spec.data.format)
        if spec.data.is_uri and fmt != "parquet":
            return False  # a remote CSV's size is unknown until it is read
        # A parquet table's size is in its footers, also on S3: a small one is read here whole.
        schema, rows = local_schema(source, fmt)
        return rows is None or rows * len(schema.names) <= LOCAL_MAX_CELLS

    def prepare_local(self, spec: Spec) -> Prepared:
        return table_prepare.prepare_local(spec)

    def prepare_ray(self, spec: Spec) -> Prepared:
        return table_prepare.prepare_ray(spec)

    # ---------------------------------------------------------------------- batch inference
    def modest(self, spec: Spec, source: str | None) -> bool:
        path, declared = input_source(spec, source)
        fmt = table_format(path, declared)
        if "://" in path:
            return fmt == "parquet" and (local_schema(path, fmt)[1] or 0) <= LOCAL_MAX_ROWS
        if fmt == "csv":
            files = [Path(path)] if Path(path).is_file() else list(Path(path).rglob("*.csv"))
            return sum(p.stat().st_size for p in files) <= LOCAL_MAX_CSV_BYTES
        return (local_schema(path, fmt)[1] or 0) <= LOCAL_MAX_ROWS

    def local_batches(
        self, spec: Spec, meta: Mapping[str, Any], source: str | None, rows: int, *, label: str | None = None
    ) -> Iterator[pd.DataFrame]:
        path, declared = input_source(spec, source)
        fmt = table_format(path, declared)
        schema, _ = local_schema(path, fmt)
        split = None
        if source is None:
            features, spec_label = check_schema(schema, spec, path)
            fraction, seed = spec.split.valid_fraction, spec.split.seed
            split = SplitFilter([*features, spec_label], fraction, seed, valid=True, keep_all=True)
        _check_columns(schema, layout_of(meta), label, path)
        frame = read_local(path, fmt).to_pandas()
        for start in range(0, len(frame), rows):
            chunk = frame.iloc[start : start + rows]
            yield split(chunk) if split is not None else chunk

    def plan_parts(
        self,
        spec: Spec,
        meta: Mapping[str, Any],
        source: str | None,
        *,
        label: str | None = None,
        screened: bool = False,
    ) -> list[table_batches.Part]:
        """The input cut into parts for batch prediction's Arrow path (``table_batches``). Its
        columns are checked first: a column of the wrong type is refused before any work, unless
        ``screened`` (bad values are the screen's to set aside, row by row) or the file is a CSV,
        whose column types are only pyarrow's guess from its cells: the screen judges each cell
        (text that reads as a number is one), and ``on_bad_row: fail`` stops at the first bad one."""
        path, declared = input_source(spec, source)
        fmt = table_format(path, declared)
        schema, _ = local_schema(path, fmt)
        _check_columns(schema, layout_of(meta), label, path, types=not screened and fmt != "csv")
        split = None
        if source is None:
            features, spec_label = check_schema(schema, spec, path)
            split = SplitFilter([*features, spec_label], spec.split.valid_fraction, spec.split.seed, valid=True)
        return table_batches.plan_parts(path, fmt, spec.predict.part_rows, split)

    def read_part(self, part: table_batches.Part, rows: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        return table_batches.read_part(part, rows)

    def screen(
        self, batch: pa.RecordBatch, meta: Mapping[str, Any], part: table_batches.Part
    ) -> table_batches.Screened:
        return table_batches.screen(batch, layout_of(meta), part.fmt)

    def file_of(self, part: table_batches.Part) -> str:
        return table_batches.file_of(part)

    def ray_input(
        self, spec: Spec, meta: Mapping[str, Any], source: str | None, *, label: str | None = None
    ) -> ray.data.Dataset:
        # Columns are checked on the file's schema: after a map_batches, asking for the schema
        # would run the pipeline's first block.
        path, declared = input_source(spec, source)
        ds = read_ray(path, table_format(path, declared))
        schema = ds.schema().base_schema
        _check_columns(schema, layout_of(meta), label, path)
        if source is not None:
            return ds
        features, spec_label = check_schema(schema, spec, path)
        fraction, seed = spec.split.valid_fraction, spec.split.seed
        split = SplitFilter([*features, spec_label], fraction, seed, valid=True, keep_all=True)
        return ds.map_batches(split, batch_format="pandas")

    def target(self, meta: Mapping[str, Any]) -> Target:
        layout = layout_of(meta)
        return Target(layout.label, layout.task, list(layout.classes))

    # ------------------------------------------------------------------------------ serving
    def request_model(self, meta: Mapping[str, Any]) -> type[BaseModel]:
        """``[{feature: value, ...}, ...]``: one object per row, every feature required, typed.

        Values are taken as JSON gives them, not coerced (docs/reliability.md, the number policy):
        ``true`` is not a number nor ``1`` a boolean, text is not a number; +-Infinity (and a
        number past a double's range, such as 1e400) is refused naming the field; null (or NaN)
        is a missing value where the model handles missing values, and refused where it does not.
        Built once per layout: building one takes ~2 ms, as long as a whole request.
        """
        return _request_model(json.dumps(layout_of(meta).to_dict(), sort_keys=True, default=str))

    def output_model(self, meta: Mapping[str, Any]) -> type[BaseModel]:
        layout = layout_of(meta)
        if layout.task == "regression":
            return create_model("Prediction", prediction=(float, Field(description="the predicted value")))
        label = _python_type(layout.label, layout)
        fields: dict[str, Any] = {
            "label": (label, Field(description=f"the predicted {layout.label}")),
            "probability": (float, Field(ge=0, le=1, description="the predicted class's probability")),
        }
        if layout.task == "multiclass":
            fields["probabilities"] = (dict[str, float], Field(description="every class's probability"))
        return create_model("Prediction", **fields)

    def decode_request(self, body: Any, meta: Mapping[str, Any]) -> list[Any]:
        # Plain dicts: they cross process boundaries (the composed topology), pydantic's
        # per-model record class would not pickle.
        return [record.__dict__ for record in body.root]

    def describe(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        layout = layout_of(meta)
        return {"features": layout.features, "task": layout.task}

    def page_fields(self, meta: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        layout = layout_of(meta)
        kinds = {int: "integer", float: "number", bool: "boolean", str: "string"}
        return [{"name": n, "type": kinds[_python_type(n, layout)], "example": ""} for n in layout.features]

    def compatible(self, served: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
        ours, theirs = layout_of(served), layout_of(other)
        if (ours.features, ours.dtypes, ours.categorical) != (theirs.features, theirs.dtypes, theirs.categorical):
            return f"takes features {', '.join(theirs.features)}; this service reads {', '.join(ours.features)}"
        return None

    def tensor_inputs(self, meta: Mapping[str, Any]) -> list[TensorMeta]:
        """One column per feature: FP64 (any number type), INT64 (any integer type), BOOL or BYTES (text)."""
        layout = layout_of(meta)
        out = []
        for name in layout.features:
            kind = _python_type(name, layout)
            if kind is float:
                out.append(TensorMeta(name, "FP64", (-1,), tensors.NUMBERS))
            elif kind is int:
                out.append(TensorMeta(name, "INT64", (-1,), tensors.INTEGERS))
            else:
                out.append(TensorMeta(name, "BOOL" if kind is bool else "BYTES", (-1,)))
        return out

    def tensor_outputs(self, meta: Mapping[str, Any]) -> list[TensorMeta]:
        layout = layout_of(meta)
        return tensors.prediction_outputs(layout.task, layout.classes)

    def from_tensors(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> list[Any]:
        """Columns -> records, then the same checks as ``POST /predict`` (NaN: a missing value)."""
        columns = {name: tensors.python_values(array) for name, array in arrays.items()}
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        try:
            body = self.request_model(meta).model_validate(rows)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            loc = [str(p) for p in first.get("loc", ())]
            where = f"input {loc[1]!r}, row {loc[0]}" if len(loc) >= 2 else "the inputs"
            raise DataError(f"{where}: {first.get('msg', 'invalid')}") from None
        return self.decode_request(body, meta)

    def to_tensors(self, results: list[dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        layout = layout_of(meta)
        return tensors.prediction_tensors(results, self.tensor_outputs(meta), layout.classes)

    # -------------------------------------------------------------------------------- drift
    def profile(self, frame: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
        return table_drift.table_profile(frame, layout_of(meta))

    def drift_values(self, items: list[Any], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return table_drift.record_values(items, layout_of(meta))

    def frame_drift_values(self, frame: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return table_drift.frame_values(frame, layout_of(meta))


@lru_cache(maxsize=16)
def _request_model(layout_json: str) -> type[BaseModel]:
    layout = TableLayout.from_dict(json.loads(layout_json))
    fields: dict[str, Any] = {name: (_request_type(name, layout), Field(...)) for name in layout.features}
    note = "ignored (any value); allowed so rows can be sent as they are"
    fields[layout.label] = (Any, Field(None, description=note))
    record = create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)
    rows = Annotated[list[record], Field(min_length=1, max_length=MAX_RECORDS)]  # type: ignore[valid-type]
    return type("PredictRequest", (RootModel[rows],), {"__doc__": "A JSON array of feature records."})


def _check_columns(schema: pa.Schema, layout: TableLayout, label: str | None, path: str, *, types: bool = True) -> None:
    """The input has the model's features (and ``label``, to evaluate with), text where the model
    read text and no text where it read numbers: what ``POST /predict`` refuses (a string for a
    number, a number for a string) batch prediction refuses too, before any work."""
    names = schema.names
    missing = [c for c in layout.features if c not in names]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} is missing; the model needs {', '.join(layout.features)}")
    if label is not None and label not in names:
        raise DataError(f"{path}: no label column {label!r}, which the model was trained on")
    for col in layout.features if types else ():
        given, trained = schema.field(col).type, layout.dtypes.get(col, "double")
        if pa.types.is_null(given) or is_text(given) == is_text_dtype(trained):
            continue  # an all-missing column (Arrow's null type) is missing values, not a type
        expected = "text" if is_text_dtype(trained) else "numbers"
        raise DataError(f"{path}: column {col!r} is {given}; the model was trained on {expected} ({trained})")
