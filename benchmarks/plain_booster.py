"""What the plain table scripts share: the checkpoint's booster as one raw-predict function, and a
batch's features as one scaled float64 matrix (the checkpoint's MinMax scaling, as training does)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


def load_raw(checkpoint: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The checkpoint's booster on ``threads`` threads: xgboost's ``inplace_predict`` or LightGBM's ``predict``."""
    if (checkpoint / "model.ubj").exists():
        import xgboost

        booster = xgboost.Booster(model_file=str(checkpoint / "model.ubj"))
        booster.set_param({"nthread": threads})
        return lambda x: np.asarray(booster.inplace_predict(x))
    import lightgbm

    lgb = lightgbm.Booster(model_file=str(next(checkpoint.glob("*.txt"))))
    return lambda x: np.asarray(lgb.predict(x, num_threads=threads))


def scaled_matrix(batch: pa.RecordBatch, features: list[str], scaler: dict[str, Any]) -> np.ndarray:
    """The batch's features in one float64 matrix, each column MinMax-scaled where the checkpoint scales it."""
    x = np.empty((batch.num_rows, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        col = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        if name in scaler:
            lo, hi = scaler[name]
            col = (col - lo) / ((hi - lo) or 1.0)
        x[:, j] = col
    return x
