"""The Open Inference Protocol codec and the data kinds' tensor checks, without a service."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from rayline.data.tensors import INTEGERS, NUMBERS, TensorMeta, checked, prediction_outputs, prediction_tensors
from rayline.errors import DataError
from rayline.serving.oip.codec import Inference, encode_rest, from_bytes, parse_rest, to_bytes

FEATURES = [
    TensorMeta("distance", "FP64", (-1,), NUMBERS),
    TensorMeta("hour", "INT64", (-1,), INTEGERS),
    TensorMeta("zone", "BYTES", (-1,)),
]


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def test_json_tensors_flat_or_nested() -> None:
    request = parse_rest(
        body(
            {"name": "distance", "datatype": "FP32", "shape": [2, 1], "data": [[1.5], [2]]},
            {"name": "hour", "datatype": "INT64", "shape": [2], "data": [3, 4]},
            {"name": "zone", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
            id="r1",
        ),
        None,
    )
    assert request.id == "r1" and request.outputs is None
    arrays = checked(request.inputs, FEATURES)
    assert arrays["distance"].dtype == np.float64 and arrays["distance"].tolist() == [1.5, 2.0]
    assert arrays["hour"].tolist() == [3, 4] and arrays["zone"].tolist() == ["a", "b"]


def test_binary_tensors_follow_the_json_header() -> None:
    distance = np.array([1.0, 2.5], dtype="<f8").tobytes()
    zone = struct.pack("<I", 1) + b"a" + struct.pack("<I", 3) + b"bcd"
    head = json.dumps(
        {
            "inputs": [
                {"name": "distance", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}},
                {"name": "zone", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(zone)}},
            ],
            "outputs": [{"name": "probability", "parameters": {"binary_data": True}}, {"name": "label"}],
        }
    ).encode()
    request = parse_rest(head + distance + zone, len(head))
    assert request.inputs["distance"][1].tolist() == [1.0, 2.5]
    assert request.inputs["zone"][1].tolist() == [b"a", b"bcd"]
    assert request.outputs == ["probability", "label"] and request.binary == {"probability"}


@pytest.mark.parametrize(
    ("tensor", "needle"),
    [
        ({"name": "hour", "datatype": "INT64", "shape": [2], "data": [1.5, 2]}, "INT64 data must be integers"),
        ({"name": "hour", "datatype": "BOOL", "shape": [2], "data": [1, 0]}, "BOOL data must be true or false"),
        ({"name": "hour", "datatype": "FP64", "shape": [2], "data": ["1", "2"]}, "FP64 data must be numbers"),
        ({"name": "hour", "datatype": "UINT8", "shape": [1], "data": [300]}, "out of UINT8's range"),
        ({"name": "hour", "datatype": "INT64", "shape": [3], "data": [1, 2]}, "2 values for shape [3]"),
        ({"name": "hour", "datatype": "INT64", "shape": [2], "data": [[1], [2, 3]]}, "not a regular"),
        ({"name": "hour", "datatype": "INT128", "shape": [1], "data": [1]}, "unknown datatype 'INT128'"),
        ({"name": "hour", "datatype": {}, "shape": [1], "data": [1]}, "unknown datatype {}"),
        ({"name": "hour", "datatype": "INT64", "shape": [-1], "data": [1]}, "negative dimension"),
        ({"name": "hour", "datatype": "INT64", "shape": "2", "data": [1, 2]}, "shape must be a list"),
        ({"name": "hour", "datatype": "INT64", "shape": [1], "parameters": [1]}, "'parameters' must be an object"),
        ({"name": "hour", "datatype": "INT64", "shape": [1]}, "has no 'data'"),
        ({"name": "zone", "datatype": "BYTES", "shape": [1], "data": [7]}, "BYTES data must be strings"),
    ],
)
def test_strict_values(tensor: dict[str, Any], needle: str) -> None:
    with pytest.raises(DataError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_rest(body(tensor), None)


@pytest.mark.parametrize(
    ("raw", "length", "needle"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "non-empty 'inputs'"),
        (body(), None, "non-empty 'inputs'"),
        (b'{"inputs": []}', 99, "does not fit"),
    ],
)
def test_bad_bodies(raw: bytes, length: int | None, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        parse_rest(raw, length)


def test_binary_sizes_are_checked() -> None:
    head = body({"name": "hour", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}})
    with pytest.raises(DataError, match="runs past the body"):
        parse_rest(head + b"\0" * 8, len(head))
    with pytest.raises(DataError, match="not a whole number of INT64 values"):
        from_bytes("hour", "INT64", (1,), b"\0" * 5)
    with pytest.raises(DataError, match="ends inside a length prefix"):
        from_bytes("zone", "BYTES", (1,), b"\1\0")


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ({"distance": ("FP64", np.zeros(2))}, "input 'hour' is missing"),
        ({"tip": ("FP64", np.zeros(2))}, "unknown input 'tip'"),
        ({"distance": ("BYTES", np.zeros(2)), "hour": ("INT64", np.zeros(2, np.int64))}, "datatype BYTES"),
        ({"distance": ("FP64", np.zeros(2)), "hour": ("FP64", np.zeros(2))}, "another integer type"),
        ({"distance": ("FP64", np.zeros((2, 3))), "hour": ("INT64", np.zeros(2, np.int64))}, "shape 2x3, expected n"),
        ({"distance": ("FP64", np.zeros(2)), "hour": ("INT64", np.zeros(3, np.int64))}, "has 3 rows"),
        ({"distance": ("FP64", np.zeros(0)), "hour": ("INT64", np.zeros(0, np.int64))}, "no rows"),
    ],
)
def test_checked_against_the_declaration(inputs: dict[str, Any], needle: str) -> None:
    declared = FEATURES[:2]
    with pytest.raises(DataError, match=needle):
        checked(inputs, declared)


def test_size_one_dimensions_may_be_left_out() -> None:
    image = TensorMeta("image", "UINT8", (-1, 1, 4, 4), NUMBERS)
    for shape in [(2, 4, 4), (2, 1, 4, 4), (2, 4, 4, 1)]:
        out = checked({"image": ("UINT8", np.full(shape, 7, np.uint8))}, [image])["image"]
        assert out.shape == (2, 1, 4, 4) and out.dtype == np.uint8
    wide = checked({"image": ("FP32", np.full((1, 4, 4), 300.0, np.float32))}, [image])["image"]
    assert wide.dtype == np.float32 and wide.max() == 300  # not wrapped to 44: the data kind refuses it
    with pytest.raises(DataError, match="shape 2x4x5, expected nx1x4x4"):
        checked({"image": ("UINT8", np.zeros((2, 4, 5), np.uint8))}, [image])


def test_answers_round_trip_as_json_and_binary() -> None:
    outputs = prediction_outputs("multiclass", ["cat", "dog"])
    assert [o.to_dict() for o in outputs] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probability", "datatype": "FP64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    results = [{"label": "dog", "probability": 0.75, "probabilities": {"cat": 0.25, "dog": 0.75}}]
    arrays = prediction_tensors(results, outputs, ["cat", "dog"])
    plain, head = encode_rest("pets", "run1", Inference(inputs={}, id="x"), arrays)
    answer = json.loads(plain)
    assert head is None and answer["id"] == "x" and answer["model_version"] == "run1"
    assert answer["outputs"][2] == {"name": "probabilities", "datatype": "FP64", "shape": [1, 2], "data": [0.25, 0.75]}
    raw, head = encode_rest("pets", "run1", Inference(inputs={}, binary={"*"}), arrays)
    assert head is not None
    described = json.loads(raw[:head])["outputs"]
    sizes = [o["parameters"]["binary_data_size"] for o in described]
    assert sum(sizes) == len(raw) - head
    assert raw[head : head + sizes[0]] == to_bytes(np.array(["dog"], dtype=np.object_)) == struct.pack("<I", 3) + b"dog"
    assert prediction_outputs("binary", [False, True])[0].datatype == "BOOL"
    assert prediction_outputs("binary", [0, 1])[0].datatype == "INT64"
    assert [o.name for o in prediction_outputs("regression", [])] == ["prediction"]
