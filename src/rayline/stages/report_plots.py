"""The matplotlib side of a run's report: the frame every figure is drawn in, and the explanation plots.

``figure`` draws into a fresh axes, saves the PNG and returns what the axes hold (title, axis
labels and scales, line labels, bar and point counts), read back from matplotlib: the report
writes these into ``report.json`` so tools and tests can check a plot without reading pixels.

``explanations`` turns a predictor's TreeSHAP contributions (``families.base.Explainer``) on the
validation split into the mean |contribution| per feature and a beeswarm in the manner of SHAP's
summary plot, drawn with matplotlib alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline.families import Explainer

PlotFn = Callable[[Any], None]
Drawn = dict[str, Any]  # what one figure shows (report.json)

EXPLAIN_ROWS = 2_000  # validation rows explained: TreeSHAP costs a tree walk per row and feature
TOP_FEATURES = 15


def figure(folder: Path, name: str, draw: PlotFn, size: tuple[float, float] = (6.0, 4.0)) -> Drawn:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
        drawn = describe(name, ax)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
    finally:
        plt.close(fig)
    return drawn


def describe(name: str, ax: Any) -> Drawn:
    """What the axes hold, read back from matplotlib (not what a helper meant to draw)."""
    return {
        "file": name,
        "title": ax.get_title(),
        "xlabel": ax.get_xlabel(),
        "ylabel": ax.get_ylabel(),
        "xscale": ax.get_xscale(),
        "yscale": ax.get_yscale(),
        "lines": [str(line.get_label()) for line in ax.get_lines() if not str(line.get_label()).startswith("_")],
        "bars": len(ax.patches),
        "points": sum(len(c.get_offsets()) for c in ax.collections),
        # Categories named on the x axis (classes, features); numeric ticks are not named until drawn.
        "xticklabels": [t.get_text() for t in ax.get_xticklabels() if t.get_text()],
    }


def explanations(
    folder: Path, explainer: Explainer, valid: pd.DataFrame, task: str
) -> tuple[dict[str, Any], list[Drawn]]:
    """Mean |contribution| per feature and a beeswarm, on a seeded sample of the validation split.

    Returns the numbers (rows explained, mean |contribution| by feature, largest first, and the
    figures' files) and the figures drawn.
    """
    rows = valid.sample(n=EXPLAIN_ROWS, random_state=0) if len(valid) > EXPLAIN_ROWS else valid
    contributions = explainer.explain(rows).drop(columns=["bias", "margin"])
    mean_abs = contributions.abs().mean().sort_values(ascending=False)
    top = [str(name) for name in mean_abs.index[:TOP_FEATURES]]
    unit = {"binary": "log-odds", "regression": "raw score"}.get(task, "margin of the predicted class")

    def draw_bars(ax: Any) -> None:
        ax.barh(top[::-1], [float(mean_abs[n]) for n in top[::-1]])
        ax.set_xlabel(f"mean |contribution| ({unit})")
        ax.set_title(f"mean |contribution| per feature ({len(rows):,} validation rows)")

    def draw_swarm(ax: Any) -> None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        rng = np.random.default_rng(0)
        for y, name in enumerate(top[::-1]):
            x = contributions[name].to_numpy(dtype=np.float64)
            shade = _shade(rows[name]) if name in rows else np.full(len(x), np.nan)
            offsets = y + _swarm_offsets(x, rng)
            grey = np.isnan(shade)  # non-numeric or missing values have no low and high
            ax.scatter(x[grey], offsets[grey], s=6, color="lightgrey")
            ax.scatter(x[~grey], offsets[~grey], s=6, c=shade[~grey], cmap="coolwarm", vmin=0, vmax=1)
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_yticks(range(len(top)), top[::-1])
        ax.set_xlabel(f"contribution ({unit})")
        ax.set_title("contributions per row (colour: the feature's value, low to high)")
        scale = ScalarMappable(norm=Normalize(0, 1), cmap="coolwarm")  # also when every feature is grey
        bar = ax.figure.colorbar(scale, ax=ax, ticks=[0, 1], pad=0.01)
        bar.ax.set_yticklabels(["low", "high"])

    height = 1.5 + 0.4 * len(top)
    figures = [
        figure(folder, "explanation_importance.png", draw_bars, (6.0, height)),
        figure(folder, "explanation_beeswarm.png", draw_swarm, (7.0, height)),
    ]
    numbers = {
        "rows": len(rows),
        "mean_abs_contribution": {str(k): float(v) for k, v in mean_abs.items()},
        "figures": [d["file"] for d in figures],
    }
    return numbers, figures


def _shade(values: pd.Series) -> np.ndarray:
    """A feature's values mapped to [0, 1] for colour (5th to 95th percentile); NaN when not numeric."""
    if not pd.api.types.is_numeric_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype):
        return np.full(len(values), np.nan)
    x: np.ndarray = np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    if np.isnan(x).all():
        return x
    low, high = (float(v) for v in np.nanpercentile(x, [5, 95]))
    if high <= low:  # one value (a constant feature): the middle of the scale
        return np.asarray(np.where(np.isnan(x), np.nan, 0.5), dtype=np.float64)
    return np.asarray(np.clip((x - low) / (high - low), 0.0, 1.0), dtype=np.float64)


def _swarm_offsets(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vertical jitter that widens where contributions crowd: a beeswarm's outline without its packing."""
    counts, edges = np.histogram(x, bins=40)
    where = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(counts) - 1)
    return np.asarray(rng.uniform(-0.4, 0.4, len(x)) * counts[where] / max(int(counts.max()), 1), dtype=np.float64)
