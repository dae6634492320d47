"""TreeSHAP contributions as the ``Explainer`` hook answers them, shared by the tree families.

xgboost (``pred_contribs``) and LightGBM (``pred_contrib``) both return one contribution per
feature and a last column, the bias (the expected margin), per row and, for multiclass models,
per class; this module picks the predicted class's and lays the numbers out as the frame
(``explain``) and the JSON records (``explain_items``) of ``rayline.families.base.Explainer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

BIAS = "bias"
MARGIN = "margin"


def predicted_class(contribs: np.ndarray, margins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[n, F+1]`` contributions and ``[n]`` margins as they are; for multiclass (``[n, K, F+1]``
    and ``[n, K]``) those of each row's predicted class, the one with the highest margin (softmax
    keeps the order, so it is the class of the highest probability too)."""
    if contribs.ndim == 2:
        return contribs, margins.reshape(len(contribs))
    rows = np.arange(len(contribs))
    best = margins.argmax(axis=1)
    return contribs[rows, best], margins[rows, best]


def explanation_frame(contribs: np.ndarray, margins: np.ndarray, features: Sequence[str], index: Any) -> pd.DataFrame:
    """One column per feature, then ``bias`` and ``margin`` (float64), one row per input row."""
    columns: dict[str, Any] = {name: contribs[:, j].astype(np.float64) for j, name in enumerate(features)}
    columns[BIAS] = contribs[:, -1].astype(np.float64)
    columns[MARGIN] = margins.astype(np.float64)
    return pd.DataFrame(columns, index=index)


def explanation_records(
    contribs: np.ndarray, margins: np.ndarray, features: Sequence[str], predictions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``{"contributions": {feature: float}, "bias", "margin", **prediction}`` per row.

    Each record carries the row's prediction (label and probability, or the prediction of a
    regression) as ``/predict`` answers it, so a caller sees what the margin became."""
    names = list(features)
    # ``tolist`` turns numpy values into JSON-ready Python floats in one C loop.
    values = contribs.astype(np.float64).tolist()
    return [
        {"contributions": dict(zip(names, row[:-1], strict=True)), BIAS: row[-1], MARGIN: margin, **prediction}
        for row, margin, prediction in zip(values, margins.astype(np.float64).tolist(), predictions, strict=True)
    ]
