"""Open Inference Protocol requests and answers <-> numpy arrays, for REST (JSON, with the binary
tensor extension) and gRPC (``contents`` or ``raw_*_contents``). No model here: ``Inference`` is
what a request asks, ``encode_*`` write what the model answered.

Values are taken strictly: an INT64 tensor of 1.5 or a BOOL tensor of 1 is refused (as
``/predict`` refuses them), not cast. Everything wrong with a request raises DataError (the
protocol's 400 / INVALID_ARGUMENT) naming the tensor.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayline.data.tensors import INTEGERS, NUMPY
from rayline.errors import DataError

Tensors = dict[str, tuple[str, np.ndarray]]  # name -> (datatype, array in its shape)


@dataclass
class Inference:
    """One infer request: its inputs, and which outputs it wants (all when ``outputs`` is None)."""

    inputs: Tensors
    id: str = ""
    outputs: list[str] | None = None
    binary: set[str] = field(default_factory=set)  # outputs wanted as binary data (REST)


def _parameters(where: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(f"{where}: 'parameters' must be an object")
    return raw


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in raw):
        raise DataError(f"input {name!r}: shape must be a list of integers")
    if any(d < 0 for d in raw):
        raise DataError(f"input {name!r}: shape {list(raw)} has a negative dimension")
    return tuple(int(d) for d in raw)


def _datatype(name: str, raw: Any) -> str:
    if not isinstance(raw, str) or raw not in NUMPY:
        raise DataError(f"input {name!r}: unknown datatype {raw!r}; expected one of {', '.join(NUMPY)}")
    return str(raw)


def _sized(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.size != math.prod(shape):
        raise DataError(f"input {name!r}: {array.size} values for shape {list(shape)} ({math.prod(shape)} values)")
    return array.reshape(shape)


def from_values(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """JSON ``data`` (flat or nested, row-major) -> an array of ``datatype``, strictly typed."""
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=np.object_).reshape(-1) if isinstance(data, list) else None
        if flat is None or not all(isinstance(v, str) for v in flat):
            raise DataError(f"input {name!r}: BYTES data must be strings")
        return _sized(name, flat, shape)
    try:
        array = np.asarray(data)
    except ValueError:
        raise DataError(f"input {name!r}: data is not a regular (rectangular) array") from None
    kind = array.dtype.kind
    if array.size and datatype == "BOOL" and kind != "b":
        raise DataError(f"input {name!r}: BOOL data must be true or false")
    if array.size and datatype in INTEGERS and kind not in "iu":
        raise DataError(f"input {name!r}: {datatype} data must be integers")
    if array.size and datatype.startswith("FP") and kind not in "iuf":
        raise DataError(f"input {name!r}: {datatype} data must be numbers")
    if array.size and datatype in INTEGERS:
        info = np.iinfo(NUMPY[datatype])
        if array.min() < info.min or array.max() > info.max:
            raise DataError(f"input {name!r}: a value is out of {datatype}'s range")
    return _sized(name, array.astype(NUMPY[datatype]), shape)


def from_bytes(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    """Binary tensor data (little-endian, row-major; BYTES: 4-byte length, then the bytes)."""
    if datatype != "BYTES":
        dtype = np.dtype(NUMPY[datatype]).newbyteorder("<")
        if len(raw) % dtype.itemsize:
            raise DataError(f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype} values")
        return _sized(name, np.frombuffer(raw, dtype=dtype).astype(NUMPY[datatype]), shape)
    values: list[bytes] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise DataError(f"input {name!r}: BYTES data ends inside a length prefix")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise DataError(f"input {name!r}: a BYTES element runs past the data")
        values.append(raw[at : at + size])
        at += size
    return _sized(name, np.array(values, dtype=np.object_), shape)


def to_bytes(array: np.ndarray) -> bytes:
    if array.dtype != np.object_:
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    parts = []
    for value in array.reshape(-1):
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def datatype_of(array: np.ndarray) -> str:
    for name, dtype in NUMPY.items():
        if array.dtype == np.dtype(dtype):
            return name
    raise TypeError(f"no protocol datatype for {array.dtype}")


# ------------------------------------------------------------------------------------ REST
def parse_rest(body: bytes, header_length: int | None) -> Inference:
    """A ``POST .../infer`` body (JSON, or JSON + binary tensors with ``Inference-Header-Content-Length``)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise DataError(f"Inference-Header-Content-Length {header_length} does not fit a {len(body)}-byte body")
    head, rest = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
    try:
        request = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        raise DataError("the request is not valid JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise DataError("the request needs a non-empty 'inputs' list")
    inputs: Tensors = {}
    at = 0
    for i, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise DataError(f"inputs.{i}: each input needs a 'name'")
        name = tensor["name"]
        if name in inputs:
            raise DataError(f"input {name!r} is given twice")
        datatype, shape = _datatype(name, tensor.get("datatype")), _shape(name, tensor.get("shape"))
        size = _parameters(f"input {name!r}", tensor.get("parameters")).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or at + size > len(rest):
                raise DataError(f"input {name!r}: binary_data_size {size!r} runs past the body")
            inputs[name] = (datatype, from_bytes(name, datatype, shape, rest[at : at + size]))
            at += size
        elif "data" in tensor:
            inputs[name] = (datatype, from_values(name, datatype, shape, tensor["data"]))
        else:
            raise DataError(f"input {name!r} has no 'data'")
    wanted = request.get("outputs")
    everything_binary = bool(_parameters("the request", request.get("parameters")).get("binary_data_output"))
    outputs, binary = None, set()
    if wanted is not None:
        if not isinstance(wanted, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
        ):
            raise DataError("'outputs' must be a list of objects with a 'name'")
        outputs = [o["name"] for o in wanted]
        binary = {
            o["name"]
            for o in wanted
            if _parameters(f"output {o['name']!r}", o.get("parameters")).get("binary_data", everything_binary)
        }
    elif everything_binary:
        binary = {"*"}
    return Inference(inputs=inputs, id=str(request.get("id") or ""), outputs=outputs, binary=binary)


def selected(inference: Inference, results: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs the request asked for, in its order (all of them when it named none)."""
    if inference.outputs is None:
        return dict(results)
    unknown = [n for n in inference.outputs if n not in results]
    if unknown:
        raise DataError(f"unknown output {unknown[0]!r}; the model answers {', '.join(results)}")
    return {n: results[n] for n in inference.outputs}


def encode_rest(
    model: str, version: str, inference: Inference, outputs: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The answer body, and the JSON header's length when binary tensors follow it."""
    described, blobs = [], []
    for name, array in outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if name in inference.binary or "*" in inference.binary:
            blob = to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    answer: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if inference.id:
        answer["id"] = inference.id
    head = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    return (head, None) if not blobs else (head + b"".join(blobs), len(head))


# ------------------------------------------------------------------------------------ gRPC
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parse_grpc(request: Any) -> Inference:
    """A ``ModelInferRequest`` (its tensors in ``contents``, or all in ``raw_input_contents``)."""
    raw: Sequence[bytes] = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise DataError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    if not request.inputs:
        raise DataError("the request has no inputs")
    inputs: Tensors = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise DataError(f"input {name!r} is given twice")
        datatype, shape = _datatype(name, tensor.datatype), _shape(name, list(tensor.shape))
        if raw:
            inputs[name] = (datatype, from_bytes(name, datatype, shape, raw[i]))
            continue
        if datatype not in _CONTENTS:
            raise DataError(f"input {name!r}: {datatype} travels only as raw_input_contents")
        values = list(getattr(tensor.contents, _CONTENTS[datatype]))
        array = np.array(values, dtype=np.object_ if datatype == "BYTES" else NUMPY[datatype])
        inputs[name] = (datatype, _sized(name, array, shape))
    outputs = [o.name for o in request.outputs] or None
    return Inference(inputs=inputs, id=request.id, outputs=outputs)


def encode_grpc(
    response: Any, model: str, version: str, inference: Inference, outputs: Mapping[str, np.ndarray]
) -> Any:
    """Fill a ``ModelInferResponse``: tensors as ``raw_output_contents`` (what standard clients read first)."""
    response.model_name, response.model_version, response.id = model, version, inference.id
    for name, array in outputs.items():
        tensor = response.outputs.add()
        tensor.name, tensor.datatype = name, datatype_of(array)
        tensor.shape.extend(array.shape)
        response.raw_output_contents.append(to_bytes(array))
    return response
