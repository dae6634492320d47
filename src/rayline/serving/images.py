"""Serving an image classifier: FastAPI ingress -> preprocessor -> model (the course's lesson 5).

Three deployments composed with handles:

- ``ImageIngress`` (FastAPI, ``@serve.ingress``): validates the JSON body, resolves which model
  answers (``model`` field or ``serve_multiplexed_model_id`` header, checked against the
  registry), and groups concurrent requests (``@serve.batch``) so each group costs one call to
  the preprocessor and one per model, not two hops per request.
- ``Preprocessor``: decodes base64 PNG/JPEG or checks 0-255 arrays -> uint8 [N, C, H, W].
- ``ImageModel``: ResNet18 replicas with dynamic request batching (``@serve.batch``) and model
  multiplexing (``@serve.multiplexed``: any registered run of the spec, loaded on first use).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from rayline import __version__, checkpoints
from rayline.errors import DataError, RegistryError
from rayline.images import ImageLayout, decode_request
from rayline.serving.app import count_batch, ingress_app

MAX_MODELS_PER_REPLICA = 3


@serve.deployment(name="preprocess")
class Preprocessor:
    """Request images -> checked uint8 arrays of the model's size and mode."""

    def __init__(self, layout: dict[str, Any]) -> None:
        self.layout = ImageLayout.from_dict(layout)

    async def __call__(self, requests: list[list[Any]]) -> list[np.ndarray | str]:
        """One entry per request: its images as one array, or the error that names the bad image.

        ``async`` on purpose: the work is well under a millisecond, and Serve runs a plain ``def``
        in a thread pool, which costs more than the decoding."""
        out: list[np.ndarray | str] = []
        for images in requests:
            try:
                out.append(decode_request(images, self.layout))
            except DataError as err:
                out.append(err.message)
        return out


@serve.deployment(name="model")
class ImageModel:
    """ResNet18 replicas: batches across requests, serves any registered run of the spec."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        *,
        default_run_id: str,
        checkpoint: checkpoints.Portable,
        home: str,
        tracking_uri: str,
        max_batch_size: int,
        cpus: int,
        precision: str = "float32",
    ) -> None:
        from rayline.families.resnet import ResNetPredictor

        self.cpus, self.precision = cpus, precision
        self.default_run_id = default_run_id
        self.default = ResNetPredictor(checkpoints.local_folder(checkpoint), cpus=cpus, precision=precision)
        self.home, self.tracking_uri = home, tracking_uri
        self.__call__.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        # Serve routes a request naming a model to the replicas that report it loaded and only
        # falls back to others when those are full: a replica added by autoscaling would get
        # no traffic until one happened to land there. Each replica reports the default at start.
        await self.get_model(default_run_id)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)  # type: ignore[untyped-decorator]
    async def get_model(self, model_id: str) -> Any:
        if model_id == self.default_run_id:
            return self.default
        from rayline.families.resnet import ResNetPredictor
        from rayline.registry import Registry

        folder = await asyncio.to_thread(Registry(Path(self.home), self.tracking_uri).checkpoint_dir, model_id)
        return await asyncio.to_thread(ResNetPredictor, folder, cpus=self.cpus, precision=self.precision)

    # No wait here: every call comes from the ingress, which already waited
    # serve.batch_wait_timeout_s to group its requests. Calls that arrive while a forward pass
    # runs still go into the next pass together. Waiting twice cost 16-client serving 5-9%
    # (paired runs, docs/benchmarks.md).
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def __call__(self, batches: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        """Each call brings one or more images; all calls of a batch run as one forward pass."""
        predictor = await self.get_model(serve.get_multiplexed_model_id() or self.default_run_id)
        records = predictor.records(predictor.probabilities(np.concatenate(batches)))
        out, start = [], 0
        for images in batches:
            out.append(records[start : start + len(images)])
            start += len(images)
        return out


@serve.deployment(name="ingress")
@serve.ingress()
class ImageIngress:
    """HTTP edge: /predict, /healthz, /docs; validates requests and picks the model."""

    def __init__(
        self,
        preprocessor: Any,
        model: Any,
        *,
        spec_name: str,
        default_run_id: str,
        layout: dict[str, Any],
        home: str,
        tracking_uri: str,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        api_key_env: str | None,
        max_request_bytes: int,
    ) -> None:
        from rayline.families.resnet import ImageRequest

        self.preprocessor, self.model = preprocessor, model
        self.layout = ImageLayout.from_dict(layout)
        self.default_run_id = default_run_id
        self.home, self.tracking_uri = home, tracking_uri
        self.known: dict[str, str] = {default_run_id: default_run_id}  # id or prefix -> full run id
        self.body_model = ImageRequest
        self.info: dict[str, Any] = {
            "spec": spec_name,
            "family": "resnet18",
            "model_run_id": default_run_id,
            "images": self.layout.describe(),
            "classes": self.layout.classes,
            "rayline_version": __version__,
            # How well dynamic batching groups concurrent requests (requests per ingress batch).
            "batching": {"batches": 0, "requests": 0, "largest": 0},
        }
        self.api_key_env, self.max_request_bytes = api_key_env, max_request_bytes
        self._batched.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]

    def __serve_build_asgi_app__(self) -> Any:
        return ingress_app(
            info=self.info,
            body_model=self.body_model,
            predict=self._predict_body,
            api_key_env=self.api_key_env,
            max_request_bytes=self.max_request_bytes,
            fields=None,  # the page draws on a canvas
        )

    async def _resolve(self, model_id: str) -> str:
        """A run id (or unique prefix) -> the full id of a resnet18 run with the same image layout."""
        if model_id in self.known:
            return self.known[model_id]
        full = await asyncio.to_thread(self._check_model, model_id)
        self.known[model_id] = full
        return full

    def _check_model(self, model_id: str) -> str:
        from rayline.registry import Registry

        registry = Registry(Path(self.home), self.tracking_uri)
        try:
            record = registry.get(model_id)
            folder = registry.checkpoint_dir(record.run_id)
        except RegistryError as err:
            raise RegistryError(f"model {model_id!r}: {err.message}") from None
        meta_file = folder / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if record.family != "resnet18" or "images" not in meta:
            raise RegistryError(f"model {model_id!r} is a {record.family} run, not an image classifier")
        theirs = ImageLayout.from_dict(meta["images"])
        ours = self.layout
        if (theirs.mode, theirs.size, theirs.mean, theirs.std) != (ours.mode, ours.size, ours.mean, ours.std):
            raise DataError(
                f"model {model_id!r} takes {theirs.describe()} images; this service decodes {ours.describe()}"
            )
        return record.run_id

    async def _predict_body(self, body: Any, header_id: str | None) -> tuple[str, list[dict[str, Any]]]:
        model_id = await self._resolve(body.model or header_id or self.default_run_id)
        result = await self._batched((body.image, model_id))
        if isinstance(result, str):
            raise DataError(result)
        return model_id, result

    # Ray forms a batch before it waits for a free batch slot: with one slot, requests arriving
    # while a batch runs would queue as batches of one. Several slots let groups overlap
    # (measured at 16 clients: 66 req/s with one slot, 345 with four).
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0, max_concurrent_batches=4)
    async def _batched(self, requests: list[tuple[list[Any], str]]) -> list[list[dict[str, Any]] | str]:
        """A group of concurrent requests: one preprocessor call, one model call per model id."""
        count_batch(self.info["batching"], len(requests))
        arrays = await self.preprocessor.remote([images for images, _ in requests])
        results: list[list[dict[str, Any]] | str] = [a if isinstance(a, str) else [] for a in arrays]
        by_model: dict[str, list[int]] = {}
        for i, ((_, model_id), array) in enumerate(zip(requests, arrays, strict=True)):
            if not isinstance(array, str):
                by_model.setdefault(model_id, []).append(i)
        calls = [
            self.model.options(multiplexed_model_id=model_id).remote(np.concatenate([arrays[i] for i in members]))
            for model_id, members in by_model.items()
        ]
        for (_, members), records in zip(by_model.items(), await asyncio.gather(*calls), strict=True):
            start = 0
            for i in members:
                n = len(arrays[i])
                results[i] = records[start : start + n]
                start += n
        return results

    async def predict(self, images: list[Any], model: str | None = None) -> list[dict[str, Any]]:
        """For Python callers: ``await handle.predict.remote([array, ...], model=None)``."""
        body = self.body_model.model_validate({"image": images, "model": model})
        return (await self._predict_body(body, None))[1]

    def healthz(self) -> dict[str, Any]:
        return {"status": "ok", **self.info}


def _light(model_options: dict[str, Any]) -> dict[str, Any]:
    """Ingress and preprocessor: little CPU each (a whole one would starve the model), and the
    spec's request limit: Serve's default of 5 would cap the ingress's batches at 5 requests."""
    return {
        "ray_actor_options": {"num_cpus": 0.1},
        "max_ongoing_requests": int(model_options.get("max_ongoing_requests", 64)),
        "logging_config": model_options.get("logging_config", {}),
    }


def image_app(
    *,
    spec_name: str,
    run_id: str,
    checkpoint: Path,
    home: str,
    tracking_uri: str,
    model_options: dict[str, Any],
    max_batch_size: int,
    batch_wait_timeout_s: float,
    api_key_env: str | None,
    max_request_bytes: int,
    precision: str = "float32",
) -> Any:
    """The composed application, ready for ``serve.run``."""
    layout = json.loads((checkpoint / "meta.json").read_text())["images"]
    num_cpus = float(model_options.get("ray_actor_options", {}).get("num_cpus", 1.0))
    model = ImageModel.options(**model_options).bind(  # type: ignore[attr-defined]
        default_run_id=run_id,
        checkpoint=checkpoints.portable(checkpoint),
        home=home,
        tracking_uri=tracking_uri,
        max_batch_size=max_batch_size,
        cpus=max(1, round(num_cpus)),
        precision=precision,
    )
    light = _light(model_options)
    preprocessor = Preprocessor.options(**light).bind(layout)  # type: ignore[attr-defined]
    return ImageIngress.options(**light).bind(  # type: ignore[attr-defined]
        preprocessor,
        model,
        spec_name=spec_name,
        default_run_id=run_id,
        layout=layout,
        home=home,
        tracking_uri=tracking_uri,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        api_key_env=api_key_env,
        max_request_bytes=max_request_bytes,
    )
