"""What both HTTP edges share: the fused ``ModelServer`` and the composed ``Ingress``.

An edge validates request bodies, picks the model that answers and serves the FastAPI app (page,
``/predict``, ``/explain``, ``/healthz``, the protocol's routes). How a body becomes an answer
differs (in the replica, or through the preprocessor and model deployments), so a subclass
defines ``_predict_body``, ``_explain_body`` and ``_live``; the rest is here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from rayline._version import __version__
from rayline.serving._auth import Access
from rayline.serving._http import ingress_app
from rayline.serving._models import Served
from rayline.serving._routing import Router, Traffic
from rayline.serving.oip import stubs
from rayline.serving.oip.service import GRPCInference


@dataclass(frozen=True)
class EdgeOptions:
    """How either edge serves, whatever the model: built once from the spec (``app.application``)."""

    max_batch_size: int
    batch_wait_timeout_s: float
    access: Access
    max_request_bytes: int
    grpc: bool = False
    scales_to_zero: bool = False
    traffic: dict[str, Any] | None = None  # ``Traffic``'s fields; None: the default run takes all

    def routes(self, run_id: str) -> Traffic:
        return Traffic.model_validate(self.traffic or {"primary": run_id})


class HTTPEdge(GRPCInference):
    served: Served
    router: Router
    body_model: type[Any]
    info: dict[str, Any]
    access: Access
    max_request_bytes: int

    def _edge_setup(
        self, edge: EdgeOptions, served: dict[str, Any], *, topology: str, batching: dict[str, int]
    ) -> None:
        """``self.served`` (``served``: ``Served``'s arguments; never loads a model here), the
        request model and what ``/healthz`` says of this service."""
        if edge.grpc:  # requests arrive pickled: their message classes must import here
            stubs.modules()
        self.served = Served(**served)
        kind, meta = self.served.kind, self.served.meta
        self.body_model = kind.request_model(meta)
        self.info = {
            "spec": served["spec_name"],
            "family": served["family"],
            "model_run_id": self.served.run_id,
            "topology": topology,
            "scales_to_zero": edge.scales_to_zero,
            **kind.describe(meta),
            "rayline_version": __version__,
            "batching": batching,
        }
        self.access, self.max_request_bytes = edge.access, edge.max_request_bytes

    async def _predict_body(self, body: Any, header_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        """A validated body and the model header -> (the run that answered, one result per item)."""
        raise NotImplementedError

    async def _explain_body(self, body: Any, header_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        """``POST /explain``: the run named (header or body), else the primary; not batched, not
        routed to a canary (an explanation is asked for about one model's answer)."""
        raise NotImplementedError

    def _live(self) -> Any:
        """What /healthz adds to ``info`` (a dict, or an awaitable of one): routing, per-model
        counts, drift of what the primary served."""
        raise NotImplementedError

    def __serve_build_asgi_app__(self) -> Any:
        return ingress_app(
            info=self.info,
            body_model=self.body_model,
            predict=self._predict_body,
            access=self.access,
            max_request_bytes=self.max_request_bytes,
            fields=self.served.kind.page_fields(self.served.meta),
            output_model=self.served.kind.output_model(self.served.meta),
            oip=self.oip,
            stream_chunk=min(self.served.family.predict_batch_size, 2048),
            live=self._live,
            explain=self._explain_body,
        )

    async def predict(self, payload: Any, model: str | None = None) -> list[dict[str, Any]]:
        """For Python callers: ``await handle.predict.remote(body)``, validated like HTTP."""
        return (await self._predict_body(self.body_model.model_validate(payload), model))[1]

    async def explain(self, payload: Any, model: str | None = None) -> list[dict[str, Any]]:
        """For Python callers: ``await handle.explain.remote(body)``, validated like HTTP."""
        return (await self._explain_body(self.body_model.model_validate(payload), model))[1]

    async def healthz(self) -> dict[str, Any]:
        live = self._live()
        if inspect.isawaitable(live):
            live = await live
        return {"status": "ok", **self.info, **live}
