"""Reading images for training and batch prediction: class-subfolder trees and image parquet.

A folder is ``DIR/<class>/<file>``: the parent folder names the class; class names are sorted,
and their order is the class index saved with the model. One scanner (``list_images``) lists
the files for every path, the Ray reader included, so both engines see the same images. The
split hashes each image's key (``<class>/<file name>``, or its bytes for parquet), so the
in-process and Ray Data readers put every image on the same side.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from rayline.data.image_codec import ImageLayout, decode
from rayline.data.split import key_mask
from rayline.data.table_schema import local_schema
from rayline.data.table_schema import read_local as read_table
from rayline.errors import DataError, read_error
from rayline.spec import Spec

if TYPE_CHECKING:
    import ray.data

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ImageSource = Literal["folder", "parquet"]


def source_kind(source: str, declared: str) -> ImageSource:
    if declared == "parquet" or source.lower().rstrip("/").endswith((".parquet", ".pq")):
        return "parquet"
    if declared == "csv":
        raise DataError(f"data.format is csv, but images are read from folders or parquet ({source})")
    return "folder"


def key_of(path: str) -> str:
    """``<class>/<file name>``: the same for a local path, an absolute path and a bucket key."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:])


def content_key(label: str, raw: bytes) -> str:
    """Split key of an image stored in a table: its class and a digest of its bytes."""
    return f"{label}/{hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:20]}"


def class_of(path: str) -> str:
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def list_images(folder: str) -> list[str]:
    """Every image file under ``folder`` (absolute paths, sorted). Names starting with ``.`` or
    ``_`` (hidden files, ``_SUCCESS`` markers, ``__MACOSX``) are skipped at every depth.

    ``os.walk`` reads file types from the directory listing: no stat per file.
    """
    if os.path.isfile(folder):  # os.walk of a file lists nothing: say what the input must be
        raise DataError(
            f"{folder}: a single file; expected a folder of images (DIR/<class>/<image>) or an image parquet"
        )
    found: list[str] = []
    for root, dirs, names in os.walk(os.path.abspath(folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [
            os.path.join(root, name)
            for name in names
            if not name.startswith((".", "_")) and os.path.splitext(name)[1].lower() in EXTENSIONS
        ]
    return sorted(found)


def scan_folder(source: str) -> list[tuple[Path, str]]:
    """``(file, class name)`` for every image under ``source/<class>/``; clear errors otherwise."""
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"{source}: expected a folder of class subfolders (DIR/<class>/<image>)")
    files = list_images(source)
    top = root.resolve()
    in_classes = [f for f in files if Path(f).parent != top]
    if not in_classes:
        what = f"{len(files)} images but" if files else "nothing:"
        raise DataError(f"{source}: contains {what} no class subfolders; expected DIR/<class>/<image>")
    # The class is the first folder under the root (DIR/<class>/any/depth/<file>).
    return [(Path(f), Path(f).relative_to(top).parts[0]) for f in in_classes]


def check_classes(labels: Sequence[str], source: str) -> list[str]:
    classes = sorted({str(v) for v in labels})
    if not classes:
        raise DataError(f"{source}: no images found")
    if len(classes) == 1:
        raise DataError(f"{source}: only one class ({classes[0]!r}); a classifier needs at least two")
    return classes


def _parquet_columns(spec: Spec) -> tuple[str, str]:
    image = spec.data.features[0] if spec.data.features else "image"
    return image, spec.data.label or "label"


def _first_size(raw: bytes, mode: str, where: str) -> tuple[int, int]:
    try:
        first = decode(raw, mode, None)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None
    return int(first.shape[1]), int(first.shape[2])


# ------------------------------------------------------------------------------ local reader
def parquet_images(spec: Spec, source: str) -> tuple[list[str], list[bytes | None], list[str], list[str]]:
    """A local parquet of encoded images: (row names, bytes, class names, split keys)."""
    image_col, label_col = _parquet_columns(spec)
    names = local_schema(source, "parquet")[0].names
    missing = [c for c in (image_col, label_col) if c not in names]
    if missing:
        raise DataError(
            f"{source}: no column {missing[0]!r}; an image parquet has an image column ({image_col!r}: encoded "
            f"bytes) and a label column ({label_col!r}); columns are {', '.join(names[:8])}"
        )
    table = read_table(source, "parquet", columns=[image_col, label_col]).to_pandas()
    blobs = [_bytes_of(v) for v in table[image_col]]
    labels = [str(v) for v in table[label_col]]
    keys = [content_key(lab, b) for lab, b in zip(labels, blobs, strict=True)]
    return [f"{source}[row {i}]" for i in range(len(blobs))], list(blobs), labels, keys


def read_local(spec: Spec, source: str, threads: int) -> tuple[pd.DataFrame, ImageLayout]:
    """Decode every image in this process: columns ``image`` (uint8 CxHxW), ``label`` (class index), ``key``."""
    mode = spec.data.image.mode
    blobs: list[Any]
    if source_kind(source, spec.data.format) == "parquet":
        names, blobs, labels, keys = parquet_images(spec, source)
    else:
        files = scan_folder(source)
        names = [str(p) for p, _ in files]
        labels = [c for _, c in files]
        keys = [key_of(n) for n in names]
        blobs = [None] * len(files)  # read in the decode threads
    size = tuple(spec.data.image.size) if spec.data.image.size else None
    load = FileDecoder(names, blobs, mode, size, skip=spec.data.on_bad_file == "skip")  # type: ignore[arg-type]
    size = load.size
    # PIL leaves the GIL while it decodes, so threads pay for large files; a small file decodes
    # mostly in Python, and threads contending for the GIL make it slower (docs/benchmarks.md).
    if names and _is_small(load, 0):
        threads = 1
    with ThreadPoolExecutor(max(1, threads)) as pool:
        arrays = list(pool.map(load, range(len(names))))
    skipped = [n for n, a in zip(names, arrays, strict=True) if a is None]
    kept = [i for i, a in enumerate(arrays) if a is not None]
    classes = check_classes([labels[i] for i in kept], source)
    index = {c: i for i, c in enumerate(classes)}
    frame = pd.DataFrame(
        {
            "image": [arrays[i] for i in kept],
            "label": np.array([index[labels[i]] for i in kept], dtype=np.int64),
            "key": [keys[i] for i in kept],
        }
    )
    layout = ImageLayout(classes, mode, size, spec.data.image.mean, spec.data.image.std, skipped)  # type: ignore[arg-type]
    return frame, layout


SMALL_FILE_BYTES = 4096  # an encoded image this small decodes fastest on one thread (see read_local)


class FileDecoder:
    """``load(i)``: image ``i`` (bytes in ``blobs[i]``, or read from the file ``names[i]``) decoded
    at ``size`` (default: the first image's); ``None`` for an undecodable one when ``skip``."""

    def __init__(
        self,
        names: Sequence[str],
        blobs: Sequence[bytes | None],
        mode: str,
        size: tuple[int, int] | None,
        *,
        skip: bool,
    ) -> None:
        self.names, self.blobs, self.mode, self.skip = names, blobs, mode, skip
        self.size = size if size is not None else _first_size(self.raw(0), mode, names[0])

    def raw(self, i: int) -> bytes:
        blob = self.blobs[i]
        return blob if blob is not None else Path(self.names[i]).read_bytes()

    def __call__(self, i: int) -> np.ndarray | None:
        try:
            return decode(self.raw(i), self.mode, self.size)
        except ValueError as err:
            if self.skip:
                return None
            hint = "set data.on_bad_file: skip to leave such files out"
            raise DataError(f"{self.names[i]}: {err}", hint=hint) from None


def _is_small(load: FileDecoder, i: int) -> bool:
    try:
        return len(load.raw(i)) < SMALL_FILE_BYTES
    except OSError:  # unreadable: the decoder names it
        return False


def _bytes_of(value: Any) -> bytes:
    # Ray Data writes images as {"bytes": ..., "path": ...} structs in some exports; accept both.
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, bytes | bytearray):
        raise DataError(f"image column holds {type(value).__name__}, expected encoded image bytes")
    return bytes(value)


def split_local(frame: pd.DataFrame, spec: Spec) -> tuple[pd.DataFrame, pd.DataFrame]:
    mask = key_mask(frame["key"].tolist(), spec.split.valid_fraction, spec.split.seed)
    train, valid = frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
    if train.empty or valid.empty:
        raise DataError(
            f"split.valid_fraction={spec.split.valid_fraction} leaves {len(train)} train and "
            f"{len(valid)} valid images; need at least one of each"
        )
    return train[["image", "label"]], valid[["image", "label"]]


# -------------------------------------------------------------------------------- Ray reader
class _Decode:
    """Ray Data batch function: encoded bytes -> ``image`` uint8 CxHxW; bad files fail or drop."""

    def __init__(self, mode: str, size: tuple[int, int], skip: bool, bytes_col: str, key_col: str) -> None:
        self.mode, self.size, self.skip = mode, size, skip
        self.bytes_col, self.key_col = bytes_col, key_col

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        images, keep = [], []
        for i, (raw, where) in enumerate(zip(batch[self.bytes_col], batch[self.key_col], strict=True)):
            try:
                images.append(decode(_bytes_of(raw), self.mode, self.size))
                keep.append(i)
            except ValueError as err:
                if not self.skip:
                    raise DataError(f"{where}: {err}") from None
        out = batch.iloc[keep].drop(columns=[self.bytes_col]).reset_index(drop=True)
        out["image"] = images
        return out


def read_ray(
    spec: Spec, source: str, *, size: tuple[int, int] | None = None
) -> tuple[ray.data.Dataset, tuple[int, int]]:
    """Images as a Ray Dataset: ``image`` uint8 CxHxW, ``label`` (class name), ``key``, ``path``."""
    import ray.data

    mode = spec.data.image.mode
    shuffle: Literal["files"] | None = "files" if spec.data.shuffle == "files" else None
    if size is None:
        size = tuple(spec.data.image.size) if spec.data.image.size else None  # type: ignore[assignment]
    try:
        if source_kind(source, spec.data.format) == "parquet":
            image_col, label_col = _parquet_columns(spec)
            ds = ray.data.read_parquet(source, columns=[image_col, label_col], shuffle=shuffle)
            if size is None:
                size = _first_size(_bytes_of(ds.take(1)[0][image_col]), mode, source)
            ds = ds.map_batches(_ContentKeys(image_col, label_col), batch_format="pandas")
            ds = ds.map_batches(
                _Decode(mode, size, spec.data.on_bad_file == "skip", image_col, "key"), batch_format="pandas"
            )
            return ds, size
        # A local folder is listed by the same scanner as the in-process reader; a URI by Ray.
        paths: str | list[str] = source
        if "://" not in source:
            paths = list_images(source)
            if not paths:
                raise DataError(f"{source}: no image files ({', '.join(EXTENSIONS)})")
        extensions = [e[1:] for e in EXTENSIONS]
        if size is None:
            row = ray.data.read_binary_files(paths, include_paths=True, file_extensions=extensions).take(1)
            if not row:
                raise DataError(f"{source}: no image files found")
            size = _first_size(row[0]["bytes"], mode, str(row[0]["path"]))
        # Files are read as bytes and decoded by the same `decode` as the in-process reader, so
        # both paths see the same pixels (and faster than `read_images`: docs/benchmarks.md).
        ds = ray.data.read_binary_files(paths, include_paths=True, shuffle=shuffle, file_extensions=extensions)
        skip = spec.data.on_bad_file == "skip"
        ds = ds.map_batches(_Decode(mode, size, skip, "bytes", "path"), batch_format="pandas")
        return ds.map_batches(_PathColumns(), batch_format="pandas"), size
    except DataError:
        raise
    except Exception as err:
        raise read_error(source, err, "images") from None


class _ContentKeys:
    def __init__(self, image_col: str, label_col: str) -> None:
        self.image_col, self.label_col = image_col, label_col

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        labels = batch[self.label_col].astype(str).tolist()
        keys = [content_key(lab, _bytes_of(raw)) for lab, raw in zip(labels, batch[self.image_col], strict=True)]
        return pd.DataFrame({self.image_col: batch[self.image_col], "label": labels, "key": keys})


class _PathColumns:
    """``path`` -> ``label`` (its parent folder) and ``key`` (the split's hash input)."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        paths = batch["path"].astype(str).tolist()
        return pd.DataFrame(
            {
                "image": batch["image"],
                "label": [class_of(p) for p in paths],
                "key": [key_of(p) for p in paths],
                "path": paths,
            }
        )


class LabelIndex:
    """Class name -> index (the layout's order); names the model does not know are an error."""

    def __init__(self, classes: list[str]) -> None:
        self.index = {c: i for i, c in enumerate(classes)}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        names = batch["label"].astype(str)
        unknown = sorted(set(names) - set(self.index))
        if unknown:
            raise DataError(f"class {unknown[0]!r} was not in the training data ({', '.join(self.index)})")
        return pd.DataFrame({"image": batch["image"], "label": names.map(self.index).astype(np.int64)})
