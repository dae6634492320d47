"""The rows ``rayline verify`` sends down every path, and each path's input made from them.

The first N rows of the spec's validation split: for tables the rows as read (every column),
written to a parquet with a row number column that batch prediction keeps beside its answers;
for images the encoded files, written to a folder with the row number as each file's name (the
batch output's ``key``), and decoded as the service decodes them, for the protocol's tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline.data import image_read, tensors
from rayline.data.base import input_source
from rayline.data.image_codec import decode
from rayline.data.split import key_mask
from rayline.errors import DataError, RaylineError
from rayline.spec import Spec
from rayline.stages.predict import ResolvedModel

ROW = "_verify_row"  # the row number column of a table's verify input
IMAGE_FOLDER = "rows"  # images go to <folder>/rows/<row number><ext>: one class folder, as a DIR/<class>/<file> set


class PathFailed(RaylineError):
    """A path could not answer (a refused request, an unreachable port): verify names it."""


@dataclass
class Rows:
    """N validation rows: ``frame`` holds a table's rows (with ``ROW``), or the images' ``bytes``
    and their decoded ``pixels`` (``uint8 [C, H, W]``); ``input`` is what batch prediction reads."""

    images: bool
    frame: pd.DataFrame
    input: Path
    skipped: list[str] = field(default_factory=list)  # undecodable images left out (data.on_bad_file: skip)

    def __len__(self) -> int:
        return len(self.frame)


def select(spec: Spec, m: ResolvedModel, n: int, folder: Path) -> Rows:
    """The first ``n`` rows of the validation split, written under ``folder`` for batch prediction."""
    rows = _images(spec, m, n, folder) if m.kind.name == "images" else _table(spec, m, n, folder)
    if len(rows) == 0:
        raise DataError(f"{spec.data.source}: the validation split has no rows to verify with")
    return rows


def _table(spec: Spec, m: ResolvedModel, n: int, folder: Path) -> Rows:
    taken: list[pd.DataFrame] = []
    count = 0
    for chunk in m.kind.local_batches(spec, m.meta, None, max(n, 4096)):
        taken.append(chunk.head(n - count))
        count += len(taken[-1])
        if count >= n:
            break
    frame = pd.concat(taken, ignore_index=True) if taken else pd.DataFrame()
    frame[ROW] = np.arange(len(frame), dtype=np.int64)
    target = folder / "rows.parquet"
    frame.to_parquet(target, index=False)
    return Rows(images=False, frame=frame, input=target)


def _images(spec: Spec, m: ResolvedModel, n: int, folder: Path) -> Rows:
    path, declared = input_source(spec, None)
    if "://" in path:
        raise DataError(f"{path}: rayline verify reads local images (copy a sample here)")
    if image_read.source_kind(path, declared) == "parquet":
        names, blobs, _, keys = image_read.parquet_images(spec, path)
    else:
        names = image_read.list_images(path)
        blobs, keys = [None] * len(names), [image_read.key_of(name) for name in names]
    layout = m.meta["layout"]
    size = (int(layout["size"][0]), int(layout["size"][1]))
    target = folder / "images" / IMAGE_FOLDER
    target.mkdir(parents=True)
    encoded: list[bytes] = []
    pixels: list[np.ndarray] = []
    skipped: list[str] = []
    for i in np.flatnonzero(key_mask(keys, spec.split.valid_fraction, spec.split.seed)):
        raw = blobs[i] if blobs[i] is not None else Path(names[i]).read_bytes()
        assert raw is not None
        try:
            pixels.append(decode(raw, layout["mode"], size))
        except ValueError as err:
            if spec.data.on_bad_file != "skip":
                raise DataError(f"{names[i]}: {err}") from None
            skipped.append(names[i])  # batch prediction skips it too; a request with it would be refused
            continue
        suffix = Path(names[i]).suffix.lower()
        (target / f"{len(encoded):05d}{suffix if suffix in image_read.EXTENSIONS else '.png'}").write_bytes(raw)
        encoded.append(raw)
        if len(encoded) == n:
            break
    frame = pd.DataFrame({ROW: np.arange(len(encoded), dtype=np.int64), "bytes": encoded, "pixels": pixels})
    return Rows(images=True, frame=frame, input=target.parent, skipped=skipped)


# ---------------------------------------------------------------------- each path's input
def _json_value(value: Any) -> Any:
    """A cell as JSON carries it: numpy scalars as Python's, NaN (a missing value) as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def request_body(rows: Rows, m: ResolvedModel, start: int, stop: int) -> Any:
    """``POST /predict``'s body for rows ``start:stop``: feature records, or base64 images."""
    import base64

    if rows.images:
        return {"image": [base64.b64encode(raw).decode("ascii") for raw in rows.frame["bytes"][start:stop]]}
    features = list(m.meta["layout"]["features"])
    chunk = rows.frame[features].iloc[start:stop]
    return [{k: _json_value(v) for k, v in record.items()} for record in chunk.to_dict("records")]


def tensor_inputs(rows: Rows, m: ResolvedModel, start: int, stop: int) -> list[tuple[str, str, np.ndarray]]:
    """The protocol's input tensors for rows ``start:stop``: (name, datatype, array)."""
    if rows.images:
        return [("image", "UINT8", np.stack(list(rows.frame["pixels"][start:stop])).astype(np.uint8))]
    out = []
    for t in m.kind.tensor_inputs(m.meta):
        column = rows.frame[t.name].iloc[start:stop]
        if t.datatype == "BYTES":
            values = [None if _json_value(v) is None else str(v) for v in column]
            if any(v is None for v in values):
                raise DataError(f"column {t.name!r}: a missing text value has no BYTES form in the protocol")
            array = np.array([v.encode() for v in values if v is not None], dtype=np.object_)
        else:
            try:
                array = column.to_numpy(dtype=tensors.NUMPY[t.datatype])
            except (TypeError, ValueError):
                raise DataError(f"column {t.name!r}: its values do not fit the protocol's {t.datatype}") from None
        out.append((t.name, t.datatype, array))
    return out


def pyfunc_input(rows: Rows, m: ResolvedModel) -> pd.DataFrame:
    """What the MLflow model takes: the feature columns, or an ``image`` column of encoded bytes."""
    if rows.images:
        return pd.DataFrame({"image": list(rows.frame["bytes"])})
    return rows.frame[list(m.meta["layout"]["features"])].reset_index(drop=True)
