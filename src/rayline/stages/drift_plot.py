"""The drift plot: PSI per feature against the threshold, and where the most drifted moved.

One PNG: the first panel bars each feature's PSI (and the predictions', hatched) with the
threshold as a line; the next panels put the training and new bucket shares side by side for
the most drifted features (at most ``DETAIL_PANELS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rayline.data.drift_profile import DriftResult

DETAIL_PANELS = 3
PREDICTION = "(predictions)"


def _psi_bars(ax: Any, result: DriftResult) -> None:
    names = sorted(result.features, key=lambda n: result.features[n])
    values = [result.features[n] for n in names]
    colors = ["tab:red" if v > result.threshold else "tab:blue" for v in values]
    hatches = [""] * len(names)
    if result.prediction is not None:
        names.append(PREDICTION)
        values.append(result.prediction)
        colors.append("tab:red" if result.prediction_flagged else "tab:grey")
        hatches.append("//")
    bars = ax.barh(names, values, color=colors)
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
    ax.axvline(result.threshold, color="black", linestyle="--", label=f"threshold {result.threshold:g}")
    ax.set_xlabel("PSI")
    ax.set_title(f"PSI per feature ({result.rows:,} rows)")
    ax.legend(loc="lower right")


def _shares(ax: Any, name: str, buckets: dict[str, list[Any]], psi: float) -> None:
    labels = buckets["labels"]
    # Empty trailing buckets (no missing values, no other category on either side) say nothing.
    keep = [i for i, (e, a) in enumerate(zip(buckets["expected"], buckets["actual"], strict=True)) if e or a]
    x = np.arange(len(keep))
    ax.bar(x - 0.2, [buckets["expected"][i] for i in keep], width=0.4, label="training")
    ax.bar(x + 0.2, [buckets["actual"][i] for i in keep], width=0.4, label="new")
    ax.set_xticks(x, [labels[i] for i in keep], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(f"{name}: PSI {psi:.3f}")
    ax.legend()


def draw_drift(result: DriftResult, path: Path, *, title: str) -> Path:
    """Write the plot of ``result`` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    ranked = sorted(result.features, key=lambda n: -result.features[n])[:DETAIL_PANELS]
    details: list[tuple[str, dict[str, list[Any]], float]] = [
        (n, result.buckets[n], result.features[n]) for n in ranked
    ]
    if result.prediction is not None and result.prediction_buckets:
        details.append((PREDICTION, result.prediction_buckets, result.prediction))
    panels = 1 + len(details)
    fig, axes = plt.subplots(panels, 1, figsize=(7.0, 3.2 * panels), squeeze=False)
    try:
        _psi_bars(axes[0][0], result)
        for ax, (name, buckets, psi) in zip(axes[1:, 0], details, strict=True):
            _shares(ax, name, buckets, psi)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.25 / panels))  # room for the title above the panels
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path
