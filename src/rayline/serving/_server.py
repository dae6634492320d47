"""The fused deployment: one replica = FastAPI ingress + request decoding + model + batching.

Used for every model unless the composed topology is asked for (``serve.topology``): a second
deployment hop costs a Serve handle call per request or batch, which on a small machine costs
more than decoding a request. Concurrent requests are merged by ``@serve.batch`` into one
``predict_items`` call per model; a request with no other in flight skips the batch queue.
Any compatible registered run can answer a request that names it (``serve_multiplexed_model_id``
header, or the body's ``model`` field where the data kind has one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ray import serve

from rayline.registry import Registry
from rayline.serving._drift import DriftGauges, LiveDrift
from rayline.serving._edge import EdgeOptions, HTTPEdge
from rayline.serving._explain import explain_run
from rayline.serving._http import count_batch
from rayline.serving._models import MAX_MODELS_PER_REPLICA, predict_checked, split_back
from rayline.serving._routing import Router
from rayline.serving.oip.service import OIPModel


@serve.deployment(name="model")
@serve.ingress()
class ModelServer(HTTPEdge):
    """Loads one registered model; serves it (and compatible ones) over HTTP and to Python handles."""

    async def __init__(self, edge: EdgeOptions, served: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        # Per replica: batches formed, requests they held, the largest, and requests that came
        # alone and were predicted without the batch queue.
        batching = {"batches": 0, "requests": 0, "largest": 0, "alone": 0}
        self._edge_setup(edge, served, topology="fused", batching=batching)
        self._in_flight = 0
        self._lone_shortcut = edge.batch_wait_timeout_s == 0  # a set wait means: wait for company
        self._predict_batch.set_max_batch_size(edge.max_batch_size)  # type: ignore[attr-defined]
        self._predict_batch.set_batch_wait_timeout_s(edge.batch_wait_timeout_s)  # type: ignore[attr-defined]
        # Serve routes a request naming a model to the replicas that report it loaded; each
        # replica reports the default at start, so a replica added by autoscaling gets traffic.
        await self.get_model(self.served.run_id)
        self.oip = OIPModel(self.served.spec_name, self.served, self._answer_items)
        self.router = Router(self.served, edge.routes(self.served.run_id), self._predict_items)
        self.router.on_switch = self._switched
        await self.router.start()
        # None: a model trained before checkpoints held a training profile.
        self.drift = LiveDrift.from_checkpoint(self.served.kind, self.served.meta, self.served.folder)
        self.drift_gauges = DriftGauges(self.served.spec_name)

    def __del__(self) -> None:
        """Serve's graceful stop (SIGTERM, a scale-down, a redeploy): the capture writes what it holds."""
        router = getattr(self, "router", None)  # the constructor may not have got that far
        if router is not None:
            router.close()

    def _switched(self, run_id: str) -> None:
        """An alias moved the primary: /healthz names it, drift compares with its training profile."""
        self.info["model_run_id"] = run_id
        folder = Registry(Path(self.served.home), self.served.tracking_uri).checkpoint_dir(run_id)
        self.drift = LiveDrift.from_checkpoint(self.served.kind, self.served.meta, folder)

    def _live(self) -> dict[str, Any]:
        return {**self.router.summary(), "drift": None if self.drift is None else self.drift.summary()}

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)  # type: ignore[untyped-decorator]
    async def get_model(self, model_id: str) -> Any:
        return await self.served.load(model_id)

    async def _predict_body(self, body: Any, header_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        run_id = await self.router.route(getattr(body, "model", None) or header_id)
        items = self.served.kind.decode_request(body, self.served.meta)
        return run_id, await self._answer_items(items, run_id)

    async def _answer_items(self, items: list[Any], run_id: str) -> list[dict[str, Any]]:
        """Decoded items (from /predict or the protocol's infer) answered by ``run_id``: counted,
        mirrored to the shadow, and, for the primary, counted for drift."""
        results = await self.router.predict(items, run_id)
        if self.drift is not None and run_id == self.served.run_id:
            self.drift.observe(items, results)
            self.drift_gauges.update(self.drift)
        return results

    async def _predict_items(self, items: list[Any], run_id: str) -> list[dict[str, Any]]:
        # Serve's batch queue costs a task switch, a timed wait and a metric per request, as
        # much as the rest of a lone request's path. One turn of the event loop lets requests
        # that arrived together all check in; a request still alone is predicted on the spot,
        # the others batch. Only with no batch wait: a set wait asks every request to wait for company.
        self._in_flight += 1
        try:
            await asyncio.sleep(0)
            if self._in_flight == 1 and self._lone_shortcut:
                self.info["batching"]["alone"] += 1
                return predict_checked(await self.get_model(run_id), items)
            results: list[dict[str, Any]] = await self._predict_batch((items, run_id))
        finally:
            self._in_flight -= 1
        return results

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _predict_batch(self, requests: list[tuple[list[Any], str]]) -> list[list[dict[str, Any]]]:
        """Concurrent requests: one ``predict_items`` call per model they name."""
        count_batch(self.info["batching"], len(requests))
        out: list[list[dict[str, Any]]] = [[] for _ in requests]
        by_model: dict[str, list[int]] = {}
        for i, (_, run_id) in enumerate(requests):
            by_model.setdefault(run_id, []).append(i)
        for run_id, members in by_model.items():
            predictor = await self.get_model(run_id)
            flat = [item for i in members for item in requests[i][0]]
            sizes = [len(requests[i][0]) for i in members]
            for i, results in zip(members, split_back(predict_checked(predictor, flat), sizes), strict=True):
                out[i] = results
        return out

    async def _explain_body(self, body: Any, header_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        run_id = await self.served.resolve(getattr(body, "model", None) or header_id)
        items = self.served.kind.decode_request(body, self.served.meta)
        return run_id, await explain_run(self.served, await self.get_model(run_id), items, run_id)
