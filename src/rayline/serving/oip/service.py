"""One served spec as the Open Inference Protocol sees it: a model named after the spec, whose
versions are its registered runs (the served one by default; any compatible run by id, the
multiplexing ``/predict`` has), with metadata, readiness and inference.

``OIPModel`` is transport-free; ``rest.add_routes`` and ``GRPCInference`` (the methods Ray
Serve's gRPC ingress calls on a deployment) put it on the wire.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from rayline._version import __version__
from rayline.data import tensors
from rayline.errors import RegistryError
from rayline.serving._auth import Access, presented_key
from rayline.serving._models import Served
from rayline.serving._statuses import ANSWERED, answer
from rayline.serving.oip.codec import Inference, encode_grpc, parse_grpc, selected

PredictItems = Callable[[list[Any], str], Awaitable[list[dict[str, Any]]]]
SERVER = {"name": "rayline", "version": __version__, "extensions": ["binary_tensor_data"]}


class OIPModel:
    def __init__(self, name: str, served: Served, predict_items: PredictItems) -> None:
        self.name, self.served, self._predict_items = name, served, predict_items

    async def version(self, name: str, version: str | None) -> str:
        """The run that answers for ``name`` (the spec) and ``version`` (a run id or prefix; none: the served run)."""
        if name != self.name:
            raise RegistryError(f"unknown model {name[:80]!r}; this service serves {self.name!r}")
        return await self.served.resolve(version or None)

    async def metadata(self, name: str, version: str | None) -> dict[str, Any]:
        run_id = await self.version(name, version)
        meta = await self.served.meta_of(run_id)
        kind = self.served.kind
        return {
            "name": self.name,
            "versions": [run_id],
            "platform": f"rayline_{meta.get('family', self.served.family.name)}",
            "inputs": [t.to_dict() for t in kind.tensor_inputs(meta)],
            "outputs": [t.to_dict() for t in kind.tensor_outputs(meta)],
        }

    async def ready(self, name: str, version: str | None) -> bool:
        await self.served.meta_of(await self.version(name, version))  # loads it, or says why not
        return True

    async def infer_run(self, run_id: str, inference: Inference) -> dict[str, np.ndarray]:
        """The outputs the request asked for, answered by ``run_id`` (``version`` names it first,
        so an unknown model is NOT_FOUND whatever the request holds)."""
        meta = await self.served.meta_of(run_id)
        kind = self.served.kind
        arrays = tensors.checked(inference.inputs, kind.tensor_inputs(meta))
        results = await self._predict_items(kind.from_tensors(arrays, meta), run_id)
        return selected(inference, kind.to_tensors(results, meta))


class GRPCInference:
    """The protocol's gRPC methods, for a deployment with an ``oip`` (``OIPModel``) attribute.

    Ray Serve calls the method named after the RPC with the request message; a bad request sets
    the status on ``grpc_context`` (INVALID_ARGUMENT, NOT_FOUND) and answers an empty message.
    With an API key configured (``access``, set by the edge), the model's methods need it as the
    call's ``authorization: Bearer KEY`` metadata, as ``/predict`` does (UNAUTHENTICATED without);
    ServerLive and ServerReady stay open, as ``/healthz`` does.
    """

    oip: OIPModel
    access: Access | None = None
    _grpc_key: bytes | None = None

    def _refused(self, grpc_context: Any) -> bool:
        """True, with UNAUTHENTICATED set, when a key is configured and the call does not carry it."""
        if self.access is None or grpc_context is None:  # no edge (a direct call in this process)
            return False
        if self._grpc_key is None:
            self._grpc_key = (self.access.key() or "").encode()
        if not self._grpc_key:
            return False
        metadata = grpc_context.invocation_metadata() or ()
        given = presented_key(
            (str(k).lower().encode(), v if isinstance(v, bytes) else str(v).encode()) for k, v in metadata
        )
        if given is not None and hmac.compare_digest(given, self._grpc_key):
            return False
        import grpc

        grpc_context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        grpc_context.set_details("missing or wrong API key (metadata authorization: Bearer KEY)")
        return True

    @staticmethod
    def _messages() -> Any:
        from rayline.serving.oip import stubs

        return stubs.messages()

    async def _answer(self, grpc_context: Any, empty: Any, work: Callable[[], Awaitable[Any]]) -> Any:
        import grpc

        if self._refused(grpc_context):
            return empty
        try:
            return await work()
        except ANSWERED as err:
            status, text = answer(err)
            grpc_context.set_code(getattr(grpc.StatusCode, status.grpc))
            grpc_context.set_details(text)
        return empty

    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:
        return self._messages().ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:
        return self._messages().ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        return self._messages().ServerMetadataResponse(**SERVER)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:
        m = self._messages()

        async def work() -> Any:
            return m.ModelReadyResponse(ready=await self.oip.ready(request.name, request.version))

        return await self._answer(grpc_context, m.ModelReadyResponse(ready=False), work)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        m = self._messages()

        async def work() -> Any:
            found = await self.oip.metadata(request.name, request.version)
            answer = m.ModelMetadataResponse(name=found["name"], versions=found["versions"], platform=found["platform"])
            for side in ("inputs", "outputs"):
                for t in found[side]:
                    getattr(answer, side).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            return answer

        return await self._answer(grpc_context, m.ModelMetadataResponse(), work)

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:
        m = self._messages()

        async def work() -> Any:
            run_id = await self.oip.version(request.model_name, request.model_version)  # NOT_FOUND first
            inference = parse_grpc(request)
            outputs = await self.oip.infer_run(run_id, inference)
            return encode_grpc(m.ModelInferResponse(), self.oip.name, run_id, inference, outputs)

        return await self._answer(grpc_context, m.ModelInferResponse(), work)
