"""With an API key set, the Open Inference Protocol over gRPC needs it as /predict does."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from rayline.serving._auth import Access
from rayline.serving.oip.service import GRPCInference


class Context:
    """What Ray Serve hands a deployment's gRPC method: the call's metadata, and where the status goes."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata, self.code, self.details = metadata, None, ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class Edge(GRPCInference):
    def __init__(self, access: Access) -> None:
        self.access, self.worked = access, 0

    async def call(self, context: Context) -> str:
        async def work() -> str:
            self.worked += 1
            return "answer"

        return str(await self._answer(context, "empty", work))


@pytest.mark.parametrize(
    ("metadata", "allowed"),
    [
        ([("authorization", "Bearer s3cret")], True),
        ([("authorization", "Bearer wrong")], False),
        ([("authorization", "Basic " + "eDpzM2NyZXQ=")], True),  # x:s3cret
        ([], False),
    ],
)
def test_the_model_methods_need_the_key(monkeypatch: pytest.MonkeyPatch, metadata: list[Any], allowed: bool) -> None:
    monkeypatch.setenv("RAYLINE_TEST_GRPC_KEY", "s3cret")
    edge, context = Edge(Access(api_key_env="RAYLINE_TEST_GRPC_KEY")), Context(metadata)
    answer = asyncio.run(edge.call(context))
    if allowed:
        assert (answer, edge.worked, context.code) == ("answer", 1, None)
    else:
        assert (answer, edge.worked, context.code) == ("empty", 0, grpc.StatusCode.UNAUTHENTICATED)
        assert context.details == "missing or wrong API key (metadata authorization: Bearer KEY)"


def test_without_a_key_every_call_is_answered() -> None:
    edge, context = Edge(Access()), Context([])
    assert asyncio.run(edge.call(context)) == "answer" and context.code is None
