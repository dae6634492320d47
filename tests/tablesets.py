"""Small tables with a learnable signal, written by the tests themselves (no taxi, no network).

Three tasks, each a pure function of a seed:

- ``binary``: label ``clicked`` (0/1 ints) in the *first* column, numeric features and a string
  column ``color``, a category by default (``data.categorical: auto``; specs here rely on it).
- ``multiclass``: label ``grade`` with the string classes ``high``, ``low``, ``mid``.
- ``regression``: float label ``price``, a noisy linear function of the features.

``write`` stores a frame as parquet or CSV; ``spec_for`` builds a small, fast xgboost spec.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rayline.spec import Spec, spec_from_dict

Kind = Literal["binary", "multiclass", "regression"]
Fmt = Literal["parquet", "csv"]

LABELS: dict[str, str] = {"binary": "clicked", "multiclass": "grade", "regression": "price"}
CLASSES = ["high", "low", "mid"]  # multiclass labels, in the sorted order the model uses
COLORS = ["blue", "green", "red"]


def binary_frame(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    count = rng.integers(0, 10, size=rows)
    color = rng.choice(COLORS, size=rows)
    logit = 2.5 * x1 - 2.0 * x2 + 1.5 * (color == "red") - 0.5 + rng.normal(scale=0.5, size=rows)
    return pd.DataFrame(
        {
            "clicked": (logit > 0).astype(np.int64),  # label first: split hashing must not depend on order
            "x1": x1,
            "x2": x2,
            "count": count.astype(np.int64),
            "color": color,
        }
    )


def multiclass_frame(rows: int = 600, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    noise = rng.normal(size=rows)
    score = 2.0 * x1 + x2 + 0.3 * rng.normal(size=rows)
    grade = np.where(score < -0.8, "low", np.where(score < 0.8, "mid", "high"))
    return pd.DataFrame({"x1": x1, "x2": x2, "noise": noise, "grade": grade})


def regression_frame(rows: int = 600, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2, 2, size=rows)
    x2 = rng.uniform(-2, 2, size=rows)
    x3 = rng.normal(size=rows)
    price = 3.0 * x1 - 2.0 * x2 + 0.5 * x1 * x2 + rng.normal(scale=0.3, size=rows)
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "price": price})


FRAMES = {"binary": binary_frame, "multiclass": multiclass_frame, "regression": regression_frame}


def frame(kind: Kind, rows: int = 600, seed: int | None = None) -> pd.DataFrame:
    make = FRAMES[kind]
    return make(rows) if seed is None else make(rows, seed)


def write(df: pd.DataFrame, folder: Path, name: str, fmt: Fmt = "parquet") -> Path:
    """``df`` as ``folder/name.<fmt>``; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def make_table(kind: Kind, folder: Path, fmt: Fmt = "parquet", rows: int = 600) -> Path:
    return write(frame(kind, rows), folder, kind, fmt)


def spec_dict(kind: Kind, source: Path | str, name: str | None = None, **sections: Any) -> dict[str, Any]:
    """A small xgboost spec as a mapping; ``sections`` are merged into the top-level sections."""
    raw: dict[str, Any] = {
        "name": name or f"t-{kind}",
        "data": {"source": str(source), "label": LABELS[kind]},
        "model": {
            "family": "xgboost",
            "num_boost_round": 20,
            "early_stopping_rounds": None,
            "params": {"max_depth": 3, "eta": 0.3, "tree_method": "hist"},
        },
        "train": {"report_every": 5},
        "scaling": {"num_workers": "auto"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def spec_for(kind: Kind, source: Path | str, name: str | None = None, **sections: Any) -> Spec:
    return spec_from_dict(spec_dict(kind, source, name, **sections))


# ------------------------------------------------------------------------------ baselines
def baseline(kind: Kind, labels: pd.Series) -> dict[str, float]:
    """What a model that ignores the features scores: class prior / the mean."""
    if kind == "regression":
        values = labels.to_numpy(dtype=np.float64)
        return {"rmse": float(values.std()), "mae": float(np.abs(values - values.mean()).mean())}
    shares = labels.value_counts(normalize=True)
    return {"accuracy": float(shares.max()), "logloss": float(-sum(p * math.log(p) for p in shares))}
