"""What both HTTP edges share: the fused ``ModelServer`` and the composed ``Ingress``.

An edge validates request bodies, picks the model that answers and serves the FastAPI app (page,
``/predict``, ``/explain``, ``/healthz``, the protocol's routes). How a body becomes an answer
differs (in the replica, or through the preprocessor and model deployments), so a subclass
defines ``_predict_body``, ``_explain_body`` and ``_live``; the rest is here.
"""

from __future__ import annotations

import inspect
from typing import Any

from rayline._version import __version__
from rayline.serving._auth import Access
from rayline.serving._http import ingress_app
from rayline.serving._models import Served
from rayline.serving._routing import Router
from rayline.serving.oip.service import GRPCInference


class HTTPEdge(GRPCInference):
    served: Served
    router: Router
    body_model: type[Any]
    info: dict[str, Any]
    access: Access
    max_request_bytes: int

    def _edge_setup(
        self,
        *,
        topology: str,
        spec_name: str,
        family: str,
        access: Access,
        max_request_bytes: int,
        scales_to_zero: bool,
        batching: dict[str, int],
    ) -> None:
        """The request model and what ``/healthz`` says of this service (``self.served`` is set)."""
        kind, meta = self.served.kind, self.served.meta
        self.body_model = kind.request_model(meta)
        self.info = {
            "spec": spec_name,
            "family": family,
            "model_run_id": self.served.run_id,
            "topology": topology,
            "scales_to_zero": scales_to_zero,
            **kind.describe(meta),
            "rayline_version": __version__,
            "batching": batching,
        }
        self.access, self.max_request_bytes = access, max_request_bytes

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
