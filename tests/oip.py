"""Open Inference Protocol calls through the standard client (tritonclient, http and grpc) only."""

from __future__ import annotations

from typing import Any

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException, np_to_triton_dtype


def clients(url: str, grpc_address: str) -> tuple[Any, Any]:
    return thttp.InferenceServerClient(url.removeprefix("http://")), tgrpc.InferenceServerClient(grpc_address)


def infer(client: Any, model: str, arrays: dict[str, np.ndarray], *, version: str = "", binary: bool = True) -> Any:
    """One infer call; the answer as ``{output: array}``."""
    module = thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc
    inputs = []
    for name, array in arrays.items():
        datatype = np_to_triton_dtype(array.dtype)
        tensor = module.InferInput(name, list(array.shape), datatype)
        if module is thttp:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs, model_version=version)
    answer = result.get_response(as_json=True) if module is tgrpc else result.get_response()
    return {o["name"]: result.as_numpy(o["name"]) for o in answer["outputs"]}, answer


def refused(client: Any, model: str, arrays: dict[str, np.ndarray], *, version: str = "") -> str:
    """The error of an infer call that must fail (its status and message, as the client reports them)."""
    try:
        infer(client, model, arrays, version=version)
    except InferenceServerException as err:
        return f"{err.status()} {err.message()}"
    raise AssertionError("the request was answered")
