"""A table's drift profile: each model feature bucketed as the model types it, and the label.

Numbers (ints, floats) are cut at quantiles; categorical features, text and booleans are
counted by value (``rayline.data.drift_profile``). The same values come from a training frame, a
frame read offline and the records of a serving request, so the three are counted alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rayline.data.drift_profile import BinKind, build_profile
from rayline.data.table_schema import TableLayout
from rayline.errors import DataError

# Arrow type names of the columns profiled as numbers; anything else is counted by value.
_NUMERIC = ("int", "uint", "float", "double", "halffloat", "decimal")


def feature_kinds(layout: TableLayout) -> dict[str, BinKind]:
    """How each model feature is bucketed: by quantiles (numbers) or by value (the rest)."""
    kinds: dict[str, BinKind] = {}
    for name in layout.features:
        dtype = layout.dtypes.get(name, "double")
        numeric = name not in layout.categorical and dtype.startswith(_NUMERIC)
        kinds[name] = "numeric" if numeric else "categorical"
    return kinds


def _numbers(values: Any, name: str, where: str) -> np.ndarray:
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    try:
        out: np.ndarray = pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        bad = next((v for v in series if not _is_number(v)), None)
        raise DataError(f"{where}: column {name!r} holds {bad!r}; the model expects numbers") from None
    return out


def _is_number(value: Any) -> bool:
    if value is None:
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def frame_values(frame: pd.DataFrame, layout: TableLayout, where: str = "input") -> dict[str, np.ndarray]:
    """Each model feature's values in ``frame`` (numbers as floats, NaN where missing)."""
    missing = [c for c in layout.features if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: column {missing[0]!r} is missing; the model needs {', '.join(layout.features)}")
    out: dict[str, np.ndarray] = {}
    for name, kind in feature_kinds(layout).items():
        column = frame[name]
        out[name] = _numbers(column, name, where) if kind == "numeric" else column.to_numpy(dtype=object)
    return out


def record_values(records: Sequence[Mapping[str, Any]], layout: TableLayout) -> dict[str, np.ndarray]:
    """The same from decoded request records (dicts, already typed by the request model)."""
    out: dict[str, np.ndarray] = {}
    for name, kind in feature_kinds(layout).items():
        column = [r.get(name) for r in records]
        # The request model checked the types: numbers (or None) convert without a fallback.
        out[name] = np.array(column, dtype=np.float64) if kind == "numeric" else np.array(column, dtype=object)
    return out


def table_profile(frame: pd.DataFrame, layout: TableLayout) -> dict[str, Any]:
    """The profile of training rows (JSON-ready): features, class balance, the label's distribution."""
    labels = frame[layout.label].to_numpy() if layout.label in frame.columns else None
    profile = build_profile(
        frame_values(frame, layout, "training rows"),
        feature_kinds(layout),
        labels=labels,
        label=layout.label,
        task=layout.task,
        classes=layout.classes,
    )
    return profile.to_dict()
