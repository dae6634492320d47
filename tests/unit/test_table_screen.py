"""The row-by-row request policy of batch prediction (predict.on_bad_row), on Arrow batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rayline.data.table_batches import arrow_matrix, arrow_outputs, screen
from rayline.data.table_schema import TableLayout


def _layout(missing: bool) -> TableLayout:
    return TableLayout(
        features=["x", "color"],
        label="y",
        task="binary",
        classes=["no", "yes"],
        categorical={"color": ["red", "blue"]},
        dtypes={"x": "double", "color": "string"},
        scaler={"x": [0.0, 10.0]},
        missing=missing,
    )


def test_text_for_a_number_is_bad_in_parquet_even_when_it_reads_as_one() -> None:
    batch = pa.record_batch({"x": ["1.5", "abc", None], "color": ["red", "blue", "red"]})
    out = screen(batch, _layout(missing=True), "parquet")
    assert out.bad_positions.tolist() == [0, 1]
    assert out.bad_reasons == ["column 'x': text where the model reads numbers"] * 2
    assert out.rows.num_rows == 1  # the missing value: the model takes missing values


def test_a_csv_cell_that_reads_as_a_number_is_one() -> None:
    batch = pa.record_batch({"x": ["1.5", "abc", "7"], "color": ["red", "blue", "red"]})
    out = screen(batch, _layout(missing=True), "csv")
    assert out.bad_positions.tolist() == [1]
    assert out.model_input.column("x").to_pylist() == [1.5, 7.0]
    assert out.rows.column("x").to_pylist() == ["1.5", "7"]  # written as given


def test_non_finite_missing_and_a_number_for_text() -> None:
    batch = pa.record_batch({"x": [1.0, np.inf, np.nan, 2.0], "color": ["red", "red", "red", None]})
    out = screen(batch, _layout(missing=False), "parquet")
    assert out.bad_positions.tolist() == [1, 2, 3]
    assert out.bad_reasons[0] == "column 'x': not a finite number"
    assert "a missing value" in out.bad_reasons[1] and "'color'" in out.bad_reasons[2]
    numbers = pa.record_batch({"x": [1.0], "color": [3]})
    assert screen(numbers, _layout(missing=True), "parquet").bad_reasons == [
        "column 'color': a number where the model read text (string)"
    ]


def test_the_matrix_is_scaled_and_the_outputs_typed() -> None:
    layout = TableLayout(["a", "b"], "y", "binary", [0, 1], {}, {}, {"a": [0.0, 4.0]})
    batch = pa.record_batch({"a": pa.array([2, 4], pa.int64()), "b": [0.5, None]})
    x = arrow_matrix(batch, layout)
    assert x.flags.c_contiguous and x.dtype == np.float64
    np.testing.assert_array_equal(x, [[0.5, 0.5], [1.0, np.nan]])
    out = arrow_outputs(np.array([0.2, 0.7]), layout)
    assert out["predicted_label"].to_pylist() == [0, 1] and out["predicted_label"].type == pa.int64()


def test_the_matrix_scales_every_column_type_in_float64() -> None:
    """Read where it lies or cast, each column is scaled as training scales: in float64 (a
    float32 column too), a null as NaN."""
    layout = TableLayout(["f", "i", "u", "n"], "y", "binary", [0, 1], {}, {}, {"f": [0.07, 55.88], "u": [1.0, 3.0]})
    batch = pa.record_batch(
        {
            "f": pa.array([0.1, 0.7], pa.float32()),
            "i": pa.array([3, None], pa.int32()),
            "u": pa.array([2, 3], pa.uint8()),
            "n": pa.array([True, False]),
        }
    )
    x = arrow_matrix(batch, layout)
    f = np.array([0.1, 0.7], dtype=np.float32).astype(np.float64)
    np.testing.assert_array_equal(x[:, 0], (f - 0.07) / (55.88 - 0.07))
    np.testing.assert_array_equal(x[:, 1:], [[3.0, 0.5, 1.0], [np.nan, 1.0, 0.0]])
    assert x.flags.c_contiguous


def test_a_clean_batch_is_passed_through_and_every_float_width_is_screened() -> None:
    """What every batch pays (``fail`` screens too): a clean batch comes back as it is; a float32
    column's infinity and an integer column's null are found without a cast."""
    layout = TableLayout(["a", "b"], "y", "binary", [0, 1], {}, {"a": "float", "b": "int64"}, {}, missing=False)
    clean = pa.record_batch({"a": pa.array([1.0, 2.0], pa.float32()), "b": pa.array([1, 2], pa.int64())})
    out = screen(clean, layout, "parquet")
    assert out.rows is clean and out.model_input is clean and out.bad_reasons == []
    dirty = pa.record_batch({"a": pa.array([np.inf, 2.0, 3.0], pa.float32()), "b": pa.array([1, 2, None], pa.int64())})
    out = screen(dirty, layout, "parquet")
    assert out.bad_positions.tolist() == [0, 2]
    assert out.bad_reasons[0] == "column 'a': not a finite number" and "'b': a missing value" in out.bad_reasons[1]
