"""Captured traffic: what a service answered, as parquet files (``serve.capture``).

One row per answered item: the request it came in (``request_id``, the same for every item of a
request and for the shadow's answer to it), which run answered and in which role (primary,
canary, shadow, named), when, how long the request took, the item's input and its answer.

- ``input``: a table record as a JSON object (features by name, as ``/predict`` takes them);
- ``image``: an image as PNG bytes (channel-first uint8 arrays, as the service decodes them);
- ``output``: the answer as JSON (label, probabilities, prediction: what ``/predict`` returns).

The serving replicas write these files (``capture_writer``); ``rayline drift --input`` and
``rayline replay`` read them back here, so the layout lives in one place below both.
Files are named ``capture-<UTC time>-<replica>-<n>.parquet``; a file being written has a name
starting with a dot, which the reader (as pyarrow's datasets) skips.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from rayline.errors import DataError

FILE_GLOB = "capture-*.parquet"
SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("item", pa.int32()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("latency_ms", pa.float64()),
        ("model", pa.string()),
        ("role", pa.string()),
        ("route", pa.string()),
        ("replica", pa.string()),
        ("input", pa.string()),
        ("image", pa.binary()),
        ("output", pa.string()),
    ]
)
ANSWERING_ROLES = ("primary", "canary", "named", "previous")  # every role but the shadow's
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    return bool(_URI.match(path))


def _png(array: np.ndarray) -> bytes:
    """A uint8 image (C x H x W, H x W x C or H x W) as PNG bytes."""
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first, as the service decodes images
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a.astype(np.uint8, copy=False))).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _unpng(data: bytes) -> np.ndarray:
    """PNG bytes -> a channel-first uint8 array, as the service decoded the image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        a = np.asarray(image, dtype=np.uint8)
    return a[np.newaxis] if a.ndim == 2 else np.moveaxis(a, -1, 0)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (in answers or records) as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# Made once: json.dumps with any option set builds a new encoder on every call, which costs
# more than encoding a small record does. The C encoder itself where there is one (CPython, not in
# typeshed): json.dumps's compact output, without its check for cycles (decoded requests have none).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_plain, allow_nan=True)
_MAKE_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = (
    None
    if _MAKE_C_ENCODER is None
    else _MAKE_C_ENCODER(None, _plain, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
)


def _json(value: Any) -> str:
    if _C_ENCODER is None:  # pragma: no cover - CPython has the C encoder
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


def encode_item(item: Any) -> tuple[str | None, bytes | None]:
    """An item as the service decoded it -> (``input``, ``image``): a record as JSON, an image as PNG."""
    if isinstance(item, dict):  # a record (the common case): encoded as it is, not copied
        return _json(item), None
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim in (2, 3):
        return None, _png(item)
    if isinstance(item, Mapping):
        return _json(dict(item)), None
    return _json(item), None


# One captured row as the writer holds it: SCHEMA's columns but ``replica`` (the same in a file):
# request_id, item, time (epoch microseconds), latency_ms, model, role, route, input, image, output.
Row = tuple[str, int, int, float, str, str, str, str | None, bytes | None, str]


def encode_rows(
    *,
    request_id: str,
    time_us: int,
    latency_ms: float,
    model: str,
    role: str,
    route: str,
    items: Iterable[Any],
    results: list[dict[str, Any]],
) -> list[Row]:
    """One answered request as rows (one per item; ``items`` pairs with ``results``)."""
    out: list[Row] = []
    for i, (item, result) in enumerate(zip(items, results, strict=True)):
        text, png = encode_item(item)
        out.append((request_id, i, time_us, latency_ms, model, role, route, text, png, _json(result)))
    return out


def row_bytes(row: Row) -> int:
    """What a row holds in memory, roughly (its encoded input, image and answer)."""
    return len(row[7] or "") + len(row[8] or b"") + len(row[9]) + 96


def table_of(held: list[Row], replica: str) -> pa.Table:
    """Rows (``encode_rows``) written by ``replica`` as a table of ``SCHEMA``: built column by column."""
    columns: list[tuple[Any, ...]] = list(zip(*held, strict=True)) if held else [() for _ in range(10)]
    columns.insert(7, (replica,) * len(held))
    arrays = [pa.array(values, type=field.type) for values, field in zip(columns, SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def filesystem_of(path: str) -> tuple[Any, str]:
    from pyarrow import fs

    if is_uri(path):
        try:
            found: tuple[Any, str] = fs.FileSystem.from_uri(path)
            return found
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: cannot open this location: {err}") from None
    from pathlib import Path

    return fs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def capture_files(path: str) -> list[str]:
    """The finished capture files under ``path`` (a folder or a URI), oldest name first."""
    from pyarrow import fs

    filesystem, root = filesystem_of(path)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.NotFound:
        raise DataError(f"{path}: no such capture folder")
    if info.type == fs.FileType.File:
        return [root] if _finished(root.rsplit("/", 1)[-1]) else []
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    names = [f.path for f in found if f.type == fs.FileType.File and _finished(f.base_name)]
    return sorted(names, key=lambda p: p.rsplit("/", 1)[-1])


def is_capture(path: str) -> bool:
    """Whether ``path`` holds capture files (a folder ``serve.capture.path`` named, or one such file)."""
    try:
        return bool(capture_files(path))
    except DataError:
        return False


def _finished(name: str) -> bool:
    return name.startswith("capture-") and name.endswith(".parquet")


def read_capture(path: str, *, roles: Iterable[str] | None = ANSWERING_ROLES) -> pa.Table:
    """Every row captured under ``path`` (files named ``capture-*.parquet``), with ``roles`` only
    (default: the answers callers got; ``None``: the shadow's too). DataError naming the file
    that cannot be read, or the folder with none."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    filesystem, _ = filesystem_of(path)
    tables = []
    for name in capture_files(path):
        try:
            tables.append(pq.read_table(name, filesystem=filesystem).cast(SCHEMA))
        except (pa.ArrowException, OSError, ValueError) as err:
            raise DataError(f"{name}: not a capture file: {str(err).splitlines()[0]}") from None
    if not tables:
        raise DataError(f"{path}: no capture files ({FILE_GLOB}) in it", hint="is serve.capture.path this folder?")
    table = pa.concat_tables(tables)
    if roles is not None:
        table = table.filter(pc.is_in(table["role"], pa.array(list(roles), pa.string())))
    if table.num_rows == 0:
        raise DataError(f"{path}: the capture holds no answered requests")
    return table


def items_of(table: pa.Table) -> list[Any]:
    """The captured inputs as the service decoded them: records (dicts) or channel-first uint8 images."""
    inputs = table.column("input").to_pylist()
    images = table.column("image").to_pylist()
    out: list[Any] = []
    for i, (text, png) in enumerate(zip(inputs, images, strict=True)):
        if png is not None:
            out.append(_unpng(png))
        elif text is not None:
            out.append(json.loads(text))
        else:
            raise DataError(f"captured row {i} (request {table.column('request_id')[i]}) holds no input")
    return out


def outputs_of(table: pa.Table) -> list[dict[str, Any]]:
    """The recorded answers, one per row."""
    return [json.loads(text) for text in table.column("output").to_pylist()]
