"""An image set's drift profile: two numbers per image, and the class balance.

Pixels are too many to profile one by one; two per-image statistics catch the shifts that
matter to a classifier fed from elsewhere (another camera, inverted or washed-out scans, blank
canvases):

- ``mean_intensity``: the image's mean pixel value, 0-255 (all channels);
- ``ink_fraction``: the share of its pixels brighter than mid-grey (>= 128), the strokes of a
  digit drawn light on dark, as MNIST's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rayline.data.drift_profile import BinKind, build_profile
from rayline.data.image_codec import ImageLayout
from rayline.errors import DataError

FEATURES: dict[str, BinKind] = {"mean_intensity": "numeric", "ink_fraction": "numeric"}
_INK = 128
_CHUNK = 256  # images stacked at a time: bounded memory for large images


def image_values(images: Sequence[np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """``mean_intensity`` and ``ink_fraction`` of each image (uint8 arrays of any shape)."""
    means, inks = [], []
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        try:
            flat = np.stack([np.asarray(a).reshape(-1) for a in chunk])
        except ValueError:
            raise DataError("images of different sizes: decode them at the model's size first") from None
        means.append(flat.mean(axis=1, dtype=np.float64))
        inks.append((flat >= _INK).mean(axis=1, dtype=np.float64))
    empty = np.empty(0, dtype=np.float64)
    return {
        "mean_intensity": np.concatenate(means) if means else empty,
        "ink_fraction": np.concatenate(inks) if inks else empty,
    }


def frame_values(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The same for the ``image`` column of a training or prediction frame."""
    if "image" not in frame.columns:
        raise DataError("input has no 'image' column")
    return image_values(frame["image"].tolist())


def class_names(labels: Any, layout: ImageLayout) -> list[str]:
    """Labels as class names: training frames hold class indexes, prediction frames names."""
    values = np.asarray(labels).reshape(-1)
    if values.size and np.issubdtype(values.dtype, np.integer):
        return [layout.classes[int(i)] for i in values]
    return [str(v) for v in values]


def image_profile(frame: pd.DataFrame, layout: ImageLayout) -> dict[str, Any]:
    """The profile of training images (JSON-ready): the two statistics and the class balance."""
    labels = class_names(frame["label"], layout) if "label" in frame.columns else None
    profile = build_profile(
        frame_values(frame), FEATURES, labels=labels, label="label", task="multiclass", classes=layout.classes
    )
    return profile.to_dict()
