"""A gRPC client of the Open Inference Protocol, with no dependency beyond grpcio and grpcio-tools.

The messages come from rayline's own proto (``serving/oip/oip.proto``), compiled by grpcio-tools
as the service's stubs are, but into a descriptor pool of their own: the generated modules
register the protocol's ``inference.*`` messages in protobuf's default pool, where another
client of the protocol loaded in the same process (tritonclient) holds the same names, and
protobuf refuses a second definition.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from rayline.serving.oip import stubs
from rayline.serving.oip.codec import to_bytes
from rayline.verify.rows import PathFailed

METHOD = "/inference.GRPCInferenceService/ModelInfer"
TIMEOUT_S = 120.0


@cache
def messages() -> tuple[Any, Any]:
    """(ModelInferRequest, ModelInferResponse) classes from a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="rayline-oip-") as tmp:
        described = Path(tmp) / "oip.desc"
        args = ["protoc", f"-I{stubs.PROTO.parent}", f"--descriptor_set_out={described}", str(stubs.PROTO)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"grpcio-tools could not compile {stubs.PROTO}")
        files = descriptor_pb2.FileDescriptorSet.FromString(described.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelInferRequest"))
    response = message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelInferResponse"))
    return request, response


class Client:
    """``ModelInfer`` calls on one channel; ``application`` routes them to a Serve application."""

    def __init__(self, address: str, *, application: str) -> None:
        import grpc

        self.request, response = messages()
        self.channel = grpc.insecure_channel(address)
        self.call = self.channel.unary_unary(
            METHOD, request_serializer=self.request.SerializeToString, response_deserializer=response.FromString
        )
        self.metadata = (("application", application),)

    def infer(self, model: str, inputs: Sequence[tuple[str, str, np.ndarray]]) -> Any:
        """One request; tensors as ``raw_input_contents``. gRPC errors name their status."""
        import grpc

        request = self.request(model_name=model)
        for name, datatype, array in inputs:
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = name, datatype
            tensor.shape.extend(array.shape)
            request.raw_input_contents.append(to_bytes(array))
        try:
            return self.call(request, metadata=self.metadata, timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            status = err.code().name if hasattr(err, "code") else "error"
            detail = err.details() if hasattr(err, "details") else str(err)
            raise PathFailed(f"Open Inference Protocol gRPC: {status}: {detail}") from None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.channel.close()
