from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rayline.datasets import (
    TAXI_COLUMNS,
    TAXI_SCHEMA,
    export_mnist_parquet,
    export_mnist_png,
    generate_taxi,
    load_mnist,
    materialize,
    write_taxi,
)
from rayline.datasets.taxi import TRUTH_COLUMN
from rayline.errors import DataError


def test_taxi_schema_and_dtypes() -> None:
    table = generate_taxi(1000, seed=1)
    assert table.num_rows == 1000
    assert tuple(table.column_names) == TAXI_COLUMNS
    assert table.schema.equals(TAXI_SCHEMA)


def test_taxi_deterministic_per_seed() -> None:
    assert generate_taxi(5000, seed=3).equals(generate_taxi(5000, seed=3))
    assert not generate_taxi(5000, seed=3).equals(generate_taxi(5000, seed=4))


def test_taxi_marginals_are_plausible() -> None:
    df = generate_taxi(200_000, seed=0, with_truth=True).to_pandas()
    assert 0.3 <= df.is_big_tip.mean() <= 0.6
    assert df.hour.between(0, 23).all() and df.day_of_week.between(1, 7).all()
    assert (df.trip_distance > 0).all() and (df.fare_amount >= 2.5).all() and (df.trip_duration >= 30).all()
    # heavy-tailed distance: the mean sits well above the median
    assert df.trip_distance.mean() > 1.3 * df.trip_distance.median()
    # rush hour is busier than 4 am
    counts = df.hour.value_counts()
    assert counts[18] > 4 * counts[4]
    # the label follows its documented probability (calibrated by construction)
    high = df[TRUTH_COLUMN] > 0.5
    assert df.is_big_tip[high].mean() > df.is_big_tip[~high].mean() + 0.15


def test_taxi_truth_column_only_on_request() -> None:
    assert TRUTH_COLUMN not in generate_taxi(10).column_names
    truth = generate_taxi(10, with_truth=True).column(TRUTH_COLUMN).to_numpy()
    assert ((truth > 0) & (truth < 1)).all()


def test_taxi_chunks_across_a_million_rows(tmp_path: Path) -> None:
    path = write_taxi(tmp_path / "t.parquet", 1_000_100, seed=5)
    meta = pq.read_metadata(path)
    assert meta.num_rows == 1_000_100
    assert pq.read_schema(path).remove_metadata().equals(TAXI_SCHEMA)


def test_taxi_csv(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv

    path = write_taxi(tmp_path / "t.csv", 100, seed=2)
    table = pacsv.read_csv(path)
    assert table.num_rows == 100 and tuple(table.column_names) == TAXI_COLUMNS


def test_taxi_bad_suffix_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\.parquet or \.csv"):
        write_taxi(tmp_path / "t.txt", 10)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rayline.datasets.taxi as taxi

    real = taxi._chunk

    def boom(rows: int, rng: np.random.Generator, *rest: float) -> dict[str, np.ndarray]:
        if rows < 1_000_000:  # the second chunk fails after the first was written
            raise RuntimeError("disk on fire")
        return real(rows, rng, *rest)

    monkeypatch.setattr(taxi, "_chunk", boom)
    with pytest.raises(RuntimeError):
        write_taxi(tmp_path / "t.parquet", 1_000_010)
    assert list(tmp_path.iterdir()) == []


def test_mnist_png_export_matches_source(tmp_path: Path) -> None:
    images, labels = load_mnist()
    out = export_mnist_png(tmp_path / "digits")
    files = sorted(out.glob("*/*.png"))
    assert len(files) == 5000
    assert sorted(p.name for p in out.iterdir()) == [str(i) for i in range(10)]
    assert all(len(list((out / str(d)).iterdir())) == 500 for d in range(10))
    for path in files[::97]:
        index = int(path.stem)
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
        assert int(path.parent.name) == labels[index]
        np.testing.assert_array_equal(pixels, images[index])


def test_mnist_export_refuses_to_overwrite(tmp_path: Path) -> None:
    out = export_mnist_png(tmp_path / "digits")
    with pytest.raises(DataError, match="already exists"):
        export_mnist_png(out)
    assert len(list(out.glob("*/*.png"))) == 5000
    export_mnist_png(out, overwrite=True)
    assert len(list(out.glob("*/*.png"))) == 5000
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]


def test_mnist_parquet_export(tmp_path: Path) -> None:
    images, labels = load_mnist()
    table = pq.read_table(export_mnist_parquet(tmp_path / "m.parquet"))
    assert table.num_rows == 5000
    assert table.schema.field("image").type == pa.binary()
    row = 1234
    decoded = np.asarray(Image.open(io.BytesIO(table.column("image")[row].as_py())))
    np.testing.assert_array_equal(decoded, images[row])
    assert table.column("label")[row].as_py() == labels[row]


def test_materialize_caches(tmp_path: Path) -> None:
    first = materialize("builtin:taxi", data_dir=tmp_path, rows=500, seed=1)
    mtime = first.stat().st_mtime_ns
    again = materialize("builtin:taxi", data_dir=tmp_path, rows=500, seed=1)
    assert again == first and again.stat().st_mtime_ns == mtime
    assert pq.read_metadata(first).num_rows == 500
