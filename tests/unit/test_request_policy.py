"""What a service takes in a request body: the number policy for tables, the bounds for images.

docs/reliability.md states the policy; these tests hold the request models to it."""

from __future__ import annotations

import base64
import json
import struct
import tracemalloc
import zlib
from typing import Any

import pytest
from pydantic import ValidationError

from rayline.data import get_kind
from rayline.data.image_codec import ImageLayout, decode_request
from rayline.data.image_request import MAX_BASE64_CHARS
from rayline.errors import DataError


def table_meta(missing: bool) -> dict[str, Any]:
    layout = {
        "features": ["distance", "passengers", "airport", "zone"],
        "label": "tip",
        "task": "binary",
        "classes": [False, True],
        "categorical": {"zone": ["a", "b"]},
        "dtypes": {"distance": "double", "passengers": "int64", "airport": "bool", "zone": "string", "tip": "bool"},
        "missing": missing,
    }
    return {"family": "xgboost", "data_kind": "table", "layout": layout}


ROW = {"distance": 2.5, "passengers": 1, "airport": False, "zone": "a"}


def first_error(model: Any, raw: str) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(raw)
    err = info.value.errors()[0]
    return ".".join(map(str, err["loc"])) + ": " + err["msg"]


@pytest.mark.parametrize("missing", [True, False])
def test_infinity_is_refused_naming_the_field(missing: bool) -> None:
    model = get_kind("table").request_model(table_meta(missing))
    for number in ("Infinity", "-Infinity", "1e400", "-1e400"):
        raw = json.dumps([ROW]).replace('"distance": 2.5', f'"distance": {number}')
        assert first_error(model, raw).startswith("0.distance: must be a finite number")


@pytest.mark.parametrize(
    ("field", "value"),
    [("distance", "true"), ("distance", '"2.5"'), ("passengers", "1.5"), ("passengers", "true"), ("airport", "1")],
)
def test_values_are_taken_as_json_types_not_coerced(field: str, value: str) -> None:
    model = get_kind("table").request_model(table_meta(True))
    raw = json.dumps([ROW]).replace(f'"{field}": {json.dumps(ROW[field])}', f'"{field}": {value}')
    assert raw != json.dumps([ROW])
    assert first_error(model, raw).startswith(f"0.{field}: Input should be a valid")


def test_null_and_nan_are_missing_values_where_the_model_takes_them() -> None:
    takes = get_kind("table").request_model(table_meta(True))
    body = takes.model_validate_json(json.dumps([{**ROW, "distance": None, "passengers": None}]))
    assert body.root[0].distance is None and body.root[0].passengers is None
    nan = takes.model_validate_json(json.dumps([ROW]).replace("2.5", "NaN"))
    assert nan.root[0].distance != nan.root[0].distance  # NaN
    refuses = get_kind("table").request_model(table_meta(False))
    assert "missing" in first_error(refuses, json.dumps([ROW]).replace("2.5", "NaN"))
    assert first_error(refuses, json.dumps([{**ROW, "distance": None}])).startswith("0.distance:")
    schema = refuses.model_json_schema()["$defs"]["Record"]["properties"]
    assert schema["distance"] == {"title": "Distance", "type": "number"}  # not nullable in the document either


def test_an_integer_feature_is_bounded_to_int64_and_takes_whole_floats() -> None:
    model = get_kind("table").request_model(table_meta(True))
    assert model.model_validate_json(json.dumps([{**ROW, "passengers": 2.0}])).root[0].passengers == 2
    assert first_error(model, json.dumps([{**ROW, "passengers": 2**70}])).startswith("0.passengers:")


LAYOUT = ImageLayout(classes=["a", "b"], mode="L", size=(4, 4))
IMAGE_META = {"family": "resnet18", "data_kind": "images", "layout": LAYOUT.to_dict()}
PLANE = [[0, 64, 128, 255]] * 4


@pytest.mark.parametrize(
    ("image", "where"),
    [
        ([[0, 1, 2, True]] * 4, "image.0.pixels.0.3: Input should be a valid number"),
        ([[0, 1, 2, -1]] * 4, "image.0.pixels.0.3: Input should be greater than or equal to 0"),
        ([[0, 1, 2, 256]] * 4, "image.0.pixels.0.3: Input should be less than or equal to 255"),
        ([[0, 1, 2, "3"]] * 4, "image.0.pixels.0.3: Input should be a valid number"),
        ([[0, 1, 2, 3]] * 3 + [[0, 1]], "image.0.pixels.3: List should have at least 4 items"),  # ragged
        ([[[0, 1, 2, 3]] * 4] * 2, "image.0.channels: List should have at most 1 item"),
        ([[[[0]]]], "image.0.channels.0.0.0: Input should be a valid number"),
        (7, "image.0.pixels: Input should be a valid array"),
    ],
)
def test_image_arrays_are_checked_by_type_shape_and_range(image: Any, where: str) -> None:
    model = get_kind("images").request_model(IMAGE_META)
    assert first_error(model, json.dumps({"image": [image]})).startswith(where)


def test_a_good_image_in_every_form() -> None:
    model = get_kind("images").request_model(IMAGE_META)
    for image in (PLANE, [PLANE]):
        body = model.model_validate_json(json.dumps({"image": [image]}))
        assert decode_request(body.image, LAYOUT).shape == (1, 1, 4, 4)
    assert model.model_validate([PLANE]).image[0] == [[float(v) for v in row] for row in PLANE]  # a bare list


def test_an_overlong_base64_string_is_refused_before_decoding() -> None:
    model = get_kind("images").request_model(IMAGE_META)
    assert "at most" in first_error(model, json.dumps({"image": ["A" * (MAX_BASE64_CHARS + 4)]}))


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (its pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [100_000, 5_000])
def test_a_png_claiming_huge_dimensions_is_refused_with_bounded_memory(side: int) -> None:
    encoded = base64.b64encode(_png_header(side, side)).decode()
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"image\.0: .*(pixels|decompression bomb)"):
            decode_request([encoded], LAYOUT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024  # the claimed image would be 25 MB to 10 GB
