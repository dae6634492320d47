"""The composed topology: FastAPI ingress -> preprocessor -> model (the course's lesson 5).

Three deployments composed with handles, for when the model replicas hold GPUs and the CPU work
of decoding requests must scale apart from them:

- ``Ingress`` (FastAPI, ``@serve.ingress``): validates the JSON body, resolves which model
  answers, and groups concurrent requests (``@serve.batch``) so each group costs one call to
  the preprocessor and one per model, not two hops per request.
- ``Preprocessor``: the data kind's ``decode_request`` (base64 PNG/JPEG or 0-255 arrays to
  uint8 arrays; table records to plain dicts).
- ``ModelReplica``: replicas with dynamic request batching and model multiplexing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ray import serve

from rayline.data import get_kind
from rayline.errors import DataError
from rayline.registry import Registry
from rayline.serving._drift import LiveDrift
from rayline.serving._edge import EdgeOptions, HTTPEdge
from rayline.serving._explain import NotExplainable, explain_run
from rayline.serving._http import count_batch
from rayline.serving._models import MAX_MODELS_PER_REPLICA, Served, predict_checked, split_back
from rayline.serving._routing import Router
from rayline.serving.oip.service import OIPModel


@serve.deployment(name="preprocess")
class Preprocessor:
    """Validated request bodies -> decoded items, the data kind's way."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.kind, self.meta = get_kind(meta["data_kind"]), meta
        self.body_model = self.kind.request_model(meta)

    async def __call__(self, bodies: list[Any]) -> list[list[Any] | str]:
        """One entry per body: its items, or the error that names the bad one.

        ``async`` on purpose: the work is short, and Serve runs a plain ``def`` in a thread
        pool, which costs more than the decoding."""
        out: list[list[Any] | str] = []
        for raw in bodies:
            try:
                out.append(self.kind.decode_request(self.body_model.model_validate(raw), self.meta))
            except DataError as err:
                out.append(err.message)
        return out


@serve.deployment(name="model")
class ModelReplica:
    """Model replicas: batches across calls, serves any compatible registered run."""

    async def __init__(self, *, max_batch_size: int, **served: Any) -> None:  # type: ignore[misc]
        self.served = Served(**served)
        self.__call__.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        await self.get_model(self.served.run_id)  # report the default loaded (see ModelServer)
        # Live drift per run answered (the ingress asks for its primary's: aliases move it).
        first = LiveDrift.from_checkpoint(self.served.kind, self.served.meta, self.served.folder)
        self.drifts: dict[str, LiveDrift | None] = {self.served.run_id: first}

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)  # type: ignore[untyped-decorator]
    async def get_model(self, model_id: str) -> Any:
        return await self.served.load(model_id)

    # No wait here: every call comes from the ingress, which already waited
    # serve.batch_wait_timeout_s to group its requests. Calls that arrive while the model runs
    # still go into the next call together.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def __call__(self, calls: list[list[Any]]) -> list[list[dict[str, Any]]]:
        run_id = serve.get_multiplexed_model_id() or self.served.run_id
        predictor = await self.get_model(run_id)
        flat = [item for items in calls for item in items]
        results = predict_checked(predictor, flat)
        monitor = await self._drift(run_id)
        if monitor is not None:
            monitor.observe(flat, results)
        return split_back(results, [len(items) for items in calls])

    async def _drift(self, run_id: str) -> LiveDrift | None:
        if run_id not in self.drifts:
            registry = Registry(Path(self.served.home), self.served.tracking_uri)
            folder = await asyncio.to_thread(registry.checkpoint_dir, run_id)
            self.drifts[run_id] = LiveDrift.from_checkpoint(self.served.kind, self.served.meta, folder)
        return self.drifts[run_id]

    async def drift_summary(self, run_id: str) -> dict[str, Any] | None:
        """This replica's live drift of what ``run_id`` answered (None: no profile)."""
        monitor = await self._drift(run_id)
        return None if monitor is None else monitor.summary()

    async def explain(self, items: list[Any]) -> list[dict[str, Any]] | str:
        """``/explain`` for decoded items (not batched), or why this model cannot explain: the
        reason as text, since an exception of rayline's own would arrive wrapped by Ray."""
        run_id = serve.get_multiplexed_model_id() or self.served.run_id
        try:
            return await explain_run(self.served, await self.get_model(run_id), items, run_id)
        except NotExplainable as err:
            return err.message


@serve.deployment(name="ingress")
@serve.ingress()
class Ingress(HTTPEdge):
    """HTTP edge: /predict, /healthz, /docs; validates requests and picks the model."""

    async def __init__(self, preprocessor: Any, model: Any, edge: EdgeOptions, served: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        self.preprocessor, self.model = preprocessor, model
        # How well dynamic batching groups concurrent requests (requests per ingress batch).
        batching = {"batches": 0, "requests": 0, "largest": 0}
        self._edge_setup(edge, served, topology="composed", batching=batching)
        self._batched.set_max_batch_size(edge.max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(edge.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.oip = OIPModel(self.served.spec_name, self.served, self._predict_items)
        # The ingress routes bodies (the preprocessor decodes them): the router's payload is a body,
        # which the capture decodes in its own thread.
        self.router = Router(
            self.served,
            edge.routes(self.served.run_id),
            self._predict_payload,
            decode_body=self._decode_body,
        )
        self.router.on_switch = lambda run_id: self.info.update(model_run_id=run_id)
        await self.router.start()

    async def _predict_items(self, items: list[Any], run_id: str) -> list[dict[str, Any]]:
        """Tensors arrive decoded (arrays): straight to the model, batched there with other calls."""
        started = time.perf_counter()
        results: list[dict[str, Any]] = await self.model.options(multiplexed_model_id=run_id).remote(items)
        self.router.captured(items, results, run_id, time.perf_counter() - started)
        return results

    def _decode_body(self, body: Any) -> list[Any]:
        return self.served.kind.decode_request(self.body_model.model_validate(body), self.served.meta)

    def __del__(self) -> None:
        """Serve's graceful stop: the capture writes what it holds."""
        router = getattr(self, "router", None)
        if router is not None:
            router.close()

    async def _predict_body(self, body: Any, header_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        run_id = await self.router.route(getattr(body, "model", None) or header_id)
        return run_id, await self.router.predict(body.model_dump(mode="json"), run_id)

    async def _predict_payload(self, body: Any, run_id: str) -> list[dict[str, Any]]:
        result = await self._batched((body, run_id))
        if isinstance(result, str):
            raise DataError(result)
        return result

    # Ray forms a batch before it waits for a free batch slot: with one slot, requests arriving
    # while a batch runs would queue as batches of one. Several slots let groups overlap.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0, max_concurrent_batches=4)
    async def _batched(self, requests: list[tuple[Any, str]]) -> list[list[dict[str, Any]] | str]:
        """A group of concurrent requests: one preprocessor call, one model call per model id."""
        count_batch(self.info["batching"], len(requests))
        decoded = await self.preprocessor.remote([body for body, _ in requests])
        results: list[list[dict[str, Any]] | str] = [d if isinstance(d, str) else [] for d in decoded]
        by_model: dict[str, list[int]] = {}
        for i, ((_, run_id), items) in enumerate(zip(requests, decoded, strict=True)):
            if not isinstance(items, str):
                by_model.setdefault(run_id, []).append(i)
        calls = [
            self.model.options(multiplexed_model_id=run_id).remote([item for i in members for item in decoded[i]])
            for run_id, members in by_model.items()
        ]
        for (_, members), records in zip(by_model.items(), await asyncio.gather(*calls), strict=True):
            for i, part in zip(members, split_back(records, [len(decoded[i]) for i in members]), strict=True):
                results[i] = part
        return results

    async def _explain_body(self, body: Any, header_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        """``POST /explain``: decoded by the preprocessor, explained by a model replica holding
        the run named (header or body), else the primary; not batched, not routed to a canary."""
        run_id = await self.served.resolve(getattr(body, "model", None) or header_id)
        decoded = (await self.preprocessor.remote([body.model_dump(mode="json")]))[0]
        if isinstance(decoded, str):
            raise DataError(decoded)
        model = self.model.options(method_name="explain", multiplexed_model_id=run_id)
        result: list[dict[str, Any]] | str = await model.remote(decoded)
        if isinstance(result, str):
            raise NotExplainable(result)
        return run_id, result

    async def _live(self) -> dict[str, Any]:
        """Routing and per-model counts (this ingress), drift of the primary (a model replica's)."""
        drift = await self.model.drift_summary.remote(self.served.run_id)
        return {**self.router.summary(), "drift": drift}


EDGE_ONLY = ("max_queued_requests", "backpressure_config")


def _light(model_options: dict[str, Any]) -> dict[str, Any]:
    """Ingress and preprocessor: little CPU each (a whole one would starve the model), and the
    spec's request limit: Serve's default of 5 would cap the ingress's batches at 5 requests."""
    return {
        "ray_actor_options": {"num_cpus": 0.1},
        "max_ongoing_requests": int(model_options.get("max_ongoing_requests", 64)),
        "logging_config": model_options.get("logging_config", {}),
    }


def composed_app(
    *, edge: EdgeOptions, served: dict[str, Any], meta: dict[str, Any], model_options: dict[str, Any]
) -> Any:
    """The composed application, ready for ``serve.run``; ``served`` are ``Served``'s arguments.

    Only the ingress sheds load (``config.overload_options``): the deployments behind it are
    called by it alone, so their queues are bounded by its own, and a full one there would be
    an error inside a request rather than a 429 at the door."""
    overload = {k: model_options[k] for k in EDGE_ONLY if k in model_options}
    inner = {k: v for k, v in model_options.items() if k not in EDGE_ONLY}
    model = ModelReplica.options(**inner).bind(max_batch_size=edge.max_batch_size, **served)  # type: ignore[attr-defined]
    light = _light(model_options)
    preprocessor = Preprocessor.options(**light).bind(meta)  # type: ignore[attr-defined]
    return Ingress.options(**light, **overload).bind(preprocessor, model, edge, served)  # type: ignore[attr-defined]
