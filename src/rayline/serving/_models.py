"""The models a service answers with: the one it was started with, and any other registered run
of a compatible model that a request names (model multiplexing), loaded on first use.

A requested id is only ever looked up in the registry (never used as a path): it must be a run
of the served spec with a model checkpoint, of a family learning from the same data kind, whose inputs the data
kind can decode the same way (``DataKind.compatible``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rayline import checkpoints
from rayline.data import DataKind, get_kind
from rayline.errors import DataError, RegistryError
from rayline.families import Predictor, get_family
from rayline.registry import Registry

MAX_MODELS_PER_REPLICA = 3


class Served:
    """The default model of a replica and the registry it resolves other model ids in."""

    def __init__(
        self,
        *,
        family: str,
        checkpoint: checkpoints.Portable,
        run_id: str,
        spec_name: str,
        home: str,
        tracking_uri: str,
        cpus: int = 1,
        precision: str = "float32",
    ) -> None:
        folder = checkpoints.local_folder(checkpoint)
        self.family = get_family(family)
        self.kind: DataKind = get_kind(self.family.data_kind)
        self.meta = checkpoints.read_meta(folder)
        self.run_id, self.folder, self.spec_name = run_id, folder, spec_name
        self.cpus, self.precision = cpus, precision
        self.home, self.tracking_uri = home, tracking_uri
        self.first = run_id  # the run whose checkpoint came with the replica (``folder``)
        self.known: dict[str, str] = {run_id: run_id}  # id or prefix -> full run id
        self.aliased: dict[str, tuple[str, float]] = {}  # alias -> (run id, when looked up)
        self.alias_ttl_s = 10.0
        self.metas: dict[str, dict[str, Any]] = {run_id: self.meta}  # run id -> its checkpoint's meta

    async def resolve(self, model_id: str | None) -> str:
        """A run id (or unique prefix) -> the full id of a run this service may answer with."""
        if not model_id:
            return self.run_id
        if model_id in self.known:
            return self.known[model_id]
        cached = self.aliased.get(model_id)
        if cached is not None and time.monotonic() - cached[1] < self.alias_ttl_s:
            return cached[0]
        run_id = await asyncio.to_thread(self._check, model_id)
        if run_id.startswith(model_id):  # an id or a prefix names one run for good
            self.known[model_id] = run_id
        else:  # an alias moves: look it up again after a while
            self.aliased[model_id] = (run_id, time.monotonic())
        return run_id

    def _check(self, model_id: str) -> str:
        registry = Registry(Path(self.home), self.tracking_uri)
        try:
            record = registry.resolve(self.spec_name, model_id, metric="", mode="min")
            folder = registry.checkpoint_dir(record.run_id)
        except RegistryError as err:  # its class kept: a store that failed is not an unknown model
            raise type(err)(f"model {model_id[:80]!r}: {err.message}") from None
        meta = checkpoints.read_meta(folder)
        if meta.get("data_kind") != self.kind.name:
            raise RegistryError(f"model {model_id!r} is a {record.family} run, not a {self.kind.name} model")
        reason = self.kind.compatible(self.meta, meta)
        if reason is not None:
            raise DataError(f"model {model_id!r} {reason}")
        return record.run_id

    async def load(self, run_id: str) -> Predictor:
        """The predictor of a run that ``resolve`` returned (loaded here: callers cache it)."""
        if run_id == self.first:
            folder = self.folder
        else:
            registry = Registry(Path(self.home), self.tracking_uri)
            folder = await asyncio.to_thread(registry.checkpoint_dir, run_id)
        meta = checkpoints.read_meta(folder)
        self.metas[run_id] = meta
        family = get_family(meta.get("family", self.family.name))
        if run_id == self.first:  # in the constructor's thread: torch may set per-thread state
            return family.load(folder, cpus=self.cpus, precision=self.precision)
        predictor: Predictor = await asyncio.to_thread(family.load, folder, cpus=self.cpus, precision=self.precision)
        return predictor

    async def meta_of(self, run_id: str) -> dict[str, Any]:
        """The checkpoint meta of a run ``resolve`` returned (its outputs may name other classes)."""
        if run_id not in self.metas:
            registry = Registry(Path(self.home), self.tracking_uri)
            folder = await asyncio.to_thread(registry.checkpoint_dir, run_id)
            self.metas[run_id] = checkpoints.read_meta(folder)
        return self.metas[run_id]


def predict_checked(predictor: Predictor, items: list[Any]) -> list[dict[str, Any]]:
    """``predict_items``, checked to return one output per input (as LitServe checks its batches)."""
    results = predictor.predict_items(items)
    if len(results) != len(items):
        raise RuntimeError(f"the predictor returned {len(results)} results for {len(items)} inputs")
    return results


def split_back(results: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    """One flat batch's results -> one list per request, by each request's item count."""
    out, start = [], 0
    for n in sizes:
        out.append(results[start : start + n])
        start += n
    return out
