"""Named tensors: how a data kind describes its inputs and outputs as the Open Inference Protocol
(KServe V2) sees them, and checks the arrays a request brings.

A tensor is declared by name, datatype (the protocol's names: BOOL, INT64, FP64, UINT8, BYTES,
...) and shape, whose first dimension is the batch (-1). Requests may send any datatype the
declaration ``accepts`` (an FP32 column for an FP64 feature), converted to the declared one
where that loses nothing; the data kind checks and converts the others (0-255 pixels as FP32).
Dimensions of size 1 after the batch may be left out or added (``[n]`` and ``[n, 1]`` are
the same column; ``[n, 28, 28]`` and ``[n, 1, 28, 28]`` the same grayscale images).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayline.errors import DataError

NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
INTEGERS = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
NUMBERS = INTEGERS | {"FP16", "FP32", "FP64"}


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size; the first dimension is the batch
    accepts: frozenset[str] = field(default=frozenset())  # besides ``datatype``

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def expected(self) -> str:
        if self.accepts >= NUMBERS:
            return f"{self.datatype} (or another number type)"
        if self.accepts >= INTEGERS:
            return f"{self.datatype} (or another integer type)"
        return self.datatype

    def allows(self, datatype: str) -> bool:
        return datatype == self.datatype or datatype in self.accepts


def core(shape: Sequence[int]) -> tuple[int, ...]:
    """The non-batch dimensions that are not 1."""
    return tuple(d for d in shape[1:] if d != 1)


def checked(tensors: Mapping[str, tuple[str, np.ndarray]], declared: Sequence[TensorMeta]) -> dict[str, np.ndarray]:
    """``name -> (datatype, array already in its shape)`` -> arrays in the declared datatype and
    shape, or DataError naming the input and what was expected."""
    names = [m.name for m in declared]
    unknown = [n for n in tensors if n not in names]
    if unknown:
        raise DataError(f"unknown input {unknown[0]!r}; the model takes {', '.join(names)}")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise DataError(f"input {missing[0]!r} is missing; the model takes {', '.join(names)}")
    out: dict[str, np.ndarray] = {}
    batch: int | None = None
    for meta in declared:
        datatype, array = tensors[meta.name]
        if not meta.allows(datatype):
            raise DataError(f"input {meta.name!r}: datatype {datatype}, expected {meta.expected()}")
        given = "x".join(map(str, array.shape))
        want = "x".join("n" if d == -1 else str(d) for d in meta.shape)
        if array.ndim == 0 or core(array.shape) != core(meta.shape):
            raise DataError(f"input {meta.name!r}: shape {given or 'scalar'}, expected {want}")
        n = int(array.shape[0])
        if batch is None:
            batch = n
        elif n != batch:
            raise DataError(f"input {meta.name!r} has {n} rows, input {declared[0].name!r} has {batch}")
        target = np.dtype(NUMPY[meta.datatype])
        if datatype != meta.datatype and meta.datatype != "BYTES" and np.can_cast(array.dtype, target, "safe"):
            array = array.astype(target)  # lossless; the data kind checks and converts the others
        out[meta.name] = array.reshape((n, *meta.shape[1:]))
    if not batch:
        raise DataError("the inputs hold no rows")
    return out


# ------------------------------------------------------------------------------ predictions
def label_datatype(values: Sequence[Any]) -> str:
    """The datatype of a label whose classes are ``values``."""
    if values and all(isinstance(v, bool | np.bool_) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        return "INT64"
    return "BYTES"


def prediction_outputs(task: str, classes: Sequence[Any]) -> list[TensorMeta]:
    """What a model answers: ``prediction`` (regression), or ``label`` and ``probability``, and
    ``probabilities`` (one column per class, in ``classes`` order) for more than two classes."""
    if task == "regression":
        return [TensorMeta("prediction", "FP64", (-1,))]
    out = [TensorMeta("label", label_datatype(list(classes)), (-1,)), TensorMeta("probability", "FP64", (-1,))]
    if task != "binary":
        out.append(TensorMeta("probabilities", "FP64", (-1, len(classes))))
    return out


def prediction_tensors(
    results: Sequence[Mapping[str, Any]], outputs: Sequence[TensorMeta], classes: Sequence[Any]
) -> dict[str, np.ndarray]:
    """Per-example results (``predict_items``) -> one array per declared output."""
    out: dict[str, np.ndarray] = {}
    for meta in outputs:
        if meta.name == "probabilities":
            names = [str(c) for c in classes]
            out[meta.name] = np.array([[r["probabilities"][c] for c in names] for r in results], dtype=np.float64)
        elif meta.datatype == "BYTES":
            out[meta.name] = np.array([str(r[meta.name]) for r in results], dtype=np.object_)
        else:
            out[meta.name] = np.array([r[meta.name] for r in results], dtype=NUMPY[meta.datatype])
    return out


def python_values(array: np.ndarray) -> list[Any]:
    """A column as JSON-ready values: bytes decoded as UTF-8, NaN as None (a missing value)."""
    values: list[Any] = array.tolist()
    if array.dtype == np.object_:
        try:
            return [v.decode() if isinstance(v, bytes) else v for v in values]
        except UnicodeDecodeError:
            raise DataError("a BYTES element is not UTF-8 text") from None
    if array.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in values]
    return values
