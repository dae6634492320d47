"""Which model answers a request, and what each model did: canary, shadow, aliases, per-model stats.

A replica serves its primary model; with ``serve.canary`` a share of the requests that name no
model goes to the canary (sticky per ``X-Route-Key`` header, random without one); with
``serve.shadow`` the shadow model also answers each request the primary answered, in the
background, and only the agreement is kept. Models are named by alias or run id; aliases are
looked up again every ``serve.alias_poll_s``, so moving one (``rayline promote``) reaches a running
service without a restart. A request that names a model itself (header or body) gets that model.

Counts, errors and latency per model are kept per replica (``/healthz``) and sent to Ray's
metrics (Prometheus) as ``rayline_model_*``, tagged with the model run and its role.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from rayline.data.capture_writer import Decode
from rayline.registry import Registry
from rayline.serving._capture import Capture
from rayline.serving._models import Served

log = logging.getLogger(__name__)
ROUTE_HEADER = "x-route-key"
ROUTE_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("rayline_route_key", default=None)
MAX_SHADOW_IN_FLIGHT = 64  # mirrored calls waiting at once; past it a mirror is skipped (counted)
PredictItems = Callable[[Any, str], Awaitable[list[dict[str, Any]]]]


class Traffic(BaseModel):
    """How a service splits its traffic, as the deployments receive it (JSON-ready)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary: str  # the selector the service was started with (an alias moves; a run id does not)
    canary: str | None = None
    canary_percent: float = 0.0
    shadow: str | None = None
    poll_s: float = 10.0
    capture: dict[str, Any] | None = None  # serve.capture (CaptureSpec), or off


@dataclass
class ModelStats:
    role: str
    requests: int = 0
    items: int = 0
    errors: int = 0
    latency_s: float = 0.0
    latency_max_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        mean = self.latency_s / self.requests if self.requests else 0.0
        return {
            "role": self.role,
            "requests": self.requests,
            "items": self.items,
            "errors": self.errors,
            "latency_ms_mean": round(mean * 1000, 3),
            "latency_ms_max": round(self.latency_max_s * 1000, 3),
        }


@dataclass
class Agreement:
    """The shadow's answers against the primary's, item by item."""

    compared: int = 0
    same_label: int = 0
    abs_diff: float = 0.0
    skipped: int = 0
    errors: int = 0

    def add(self, primary: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> None:
        for ours, theirs in zip(primary, shadow, strict=True):
            self.compared += 1
            if "label" in ours:
                self.same_label += int(ours["label"] == theirs.get("label"))
            self.abs_diff += _difference(ours, theirs)

    def as_dict(self) -> dict[str, Any]:
        n = self.compared
        return {
            "compared": n,
            "label_agreement": round(self.same_label / n, 6) if n else None,
            "mean_abs_difference": round(self.abs_diff / n, 6) if n else None,
            "skipped": self.skipped,
            "errors": self.errors,
        }


def _difference(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """|difference| of the probabilities (mean over classes), or of the regression predictions."""
    if isinstance(ours.get("probabilities"), dict) and isinstance(theirs.get("probabilities"), dict):
        classes = ours["probabilities"].keys() | theirs["probabilities"].keys()
        total = sum(abs(ours["probabilities"].get(c, 0.0) - theirs["probabilities"].get(c, 0.0)) for c in classes)
        return float(total / max(1, len(classes)))
    for key in ("probability", "prediction"):
        if key in ours and key in theirs:
            return float(abs(float(ours[key]) - float(theirs[key])))
    return 0.0


@dataclass
class _Metrics:
    """Ray's metrics (exported where Ray exports them: each node's Prometheus endpoint)."""

    requests: Any = None
    errors: Any = None
    latency: Any = None
    agreement: Any = None
    spec: str = ""

    @classmethod
    def create(cls, spec: str) -> _Metrics:
        try:
            from ray.serve import metrics
        except ImportError:  # pragma: no cover - ray is a dependency
            return cls(spec=spec)
        keys: Any = ("spec", "model", "role")  # Ray annotates tag_keys as a 1-tuple
        return cls(
            requests=metrics.Counter("rayline_model_requests", "requests answered, per model", tag_keys=keys),
            errors=metrics.Counter("rayline_model_errors", "requests that failed, per model", tag_keys=keys),
            latency=metrics.Histogram(
                "rayline_model_latency_ms",
                "time to answer a request, per model",
                boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
                tag_keys=keys,
            ),
            agreement=metrics.Gauge(
                "rayline_shadow_label_agreement", "share of shadow answers with the served label", tag_keys=keys
            ),
            spec=spec,
        )

    def record(self, run_id: str, role: str, seconds: float, failed: bool) -> None:
        if self.requests is None:
            return
        tags = {"spec": self.spec, "model": run_id, "role": role}
        (self.errors if failed else self.requests).inc(1, tags=tags)
        self.latency.observe(seconds * 1000, tags=tags)


@dataclass
class Router:
    """One replica's routing state. ``predict(items, run_id)`` is the replica's batched predict."""

    served: Served
    traffic: Traffic
    predict_items: PredictItems
    stats: dict[str, ModelStats] = field(default_factory=dict)  # requests each run answered
    shadow_stats: ModelStats = field(default_factory=lambda: ModelStats("shadow"))  # mirrored calls
    agreement: Agreement = field(default_factory=Agreement)
    canary_run: str | None = None
    shadow_run: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> run id, as last looked up
    on_switch: Callable[[str], None] | None = None  # told the new primary run id
    # The composed ingress routes bodies: the capture decodes them (off the request path).
    decode_body: Decode | None = None
    capture: Capture | None = None
    _metrics: _Metrics = field(default_factory=_Metrics)
    _mirrors: set[asyncio.Task[None]] = field(default_factory=set)
    _poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Resolve the canary and shadow (compatibility checked like any named model), start polling."""
        self._metrics = _Metrics.create(self.served.spec_name)
        self.served.alias_ttl_s = self.traffic.poll_s
        self.stats[self.served.run_id] = ModelStats("primary")
        if self.traffic.capture:
            self.capture = Capture(self.traffic.capture, self.decode_body)
        if self.traffic.canary:
            self.canary_run = await self.served.resolve(self.traffic.canary)
            self.stats.setdefault(self.canary_run, ModelStats("canary"))
        if self.traffic.shadow:
            self.shadow_run = await self.served.resolve(self.traffic.shadow)
        self.aliases = await asyncio.to_thread(self._look_up)
        if self.aliases:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def _selectors(self) -> dict[str, str | None]:
        t = self.traffic
        return {"primary": t.primary, "canary": t.canary, "shadow": t.shadow}

    def _look_up(self) -> dict[str, str]:
        registry = Registry(Path(self.served.home), self.served.tracking_uri)
        found: dict[str, str] = {}
        for selector in {s for s in self._selectors().values() if s and s not in ("best", "latest")}:
            run_id = registry.alias_run(self.served.spec_name, selector)
            if run_id is not None:
                found[selector] = run_id
        return found

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.traffic.poll_s)
            try:
                await self.refresh()
            except Exception as err:  # a registry hiccup must not stop the polling
                log.warning("could not look the aliases up: %s", err)

    async def refresh(self) -> None:
        """Look the aliases up again; follow any that moved."""
        now = await asyncio.to_thread(self._look_up)
        for role, selector in self._selectors().items():
            if not selector or selector not in now or now[selector] == self.aliases.get(selector):
                continue
            run_id = await self.served.resolve(now[selector])
            log.info("alias %s of %s now points at run %s", selector, self.served.spec_name, run_id)
            if role == "primary":
                self.served.run_id = run_id
                if self.on_switch is not None:
                    self.on_switch(run_id)
            elif role == "canary":
                self.canary_run = run_id
            else:
                self.shadow_run = run_id
            self._restat()
        self.aliases.update(now)

    def _restat(self) -> None:
        """Roles follow the runs: a run that lost its role keeps its counts, as ``previous``."""
        roles = {self.served.run_id: "primary"}
        if self.canary_run:
            roles.setdefault(self.canary_run, "canary")
        for run_id, stat in self.stats.items():
            stat.role = roles.get(run_id, "previous")
        for run_id, role in roles.items():
            self.stats.setdefault(run_id, ModelStats(role))

    async def route(self, named: str | None) -> str:
        """The run that answers: the one named, else the canary for its share, else the primary."""
        if named:
            return await self.served.resolve(named)
        if self.canary_run and self._in_canary():
            return self.canary_run
        return self.served.run_id

    def _in_canary(self) -> bool:
        key = ROUTE_KEY.get()
        draw = zlib.crc32(key.encode()) % 10_000 / 100 if key else random.uniform(0, 100)
        return draw < self.traffic.canary_percent

    async def predict(self, items: Any, run_id: str) -> list[dict[str, Any]]:
        """Answer with ``run_id``, counted; mirror to the shadow when the primary answered.

        ``items`` is whatever the replica's predict takes (decoded items, or a body to decode)."""
        stat = self.stats.get(run_id)
        if stat is None:
            stat = self.stats[run_id] = ModelStats("named")
        started = time.perf_counter()
        failed, results = True, []
        try:
            results = await self.predict_items(items, run_id)
            failed = False
        finally:
            took = time.perf_counter() - started
            stat.requests += 1
            stat.items += len(results)
            stat.errors += int(failed)
            stat.latency_s += took
            stat.latency_max_s = max(stat.latency_max_s, took)
            self._metrics.record(run_id, stat.role, took, failed)
        if self.capture is not None:
            is_body = self.decode_body is not None
            self.capture.record(items, results, model=run_id, role=stat.role, took_s=took, is_body=is_body)
        if self.shadow_run and run_id == self.served.run_id and self.shadow_run != run_id:
            self._mirror(items, results)
        return results

    def _mirror(self, items: Any, primary: list[dict[str, Any]]) -> None:
        if len(self._mirrors) >= MAX_SHADOW_IN_FLIGHT:
            self.agreement.skipped += len(primary)
            return
        task = asyncio.get_running_loop().create_task(self._shadow(items, primary))
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _shadow(self, items: Any, primary: list[dict[str, Any]]) -> None:
        shadow = self.shadow_run
        assert shadow is not None
        stat = self.shadow_stats
        started = time.perf_counter()
        try:
            answers = await self.predict_items(items, shadow)
        except Exception as err:  # the shadow never touches a response, nor fails one
            stat.errors += 1
            self.agreement.errors += 1
            self._metrics.record(shadow, "shadow", time.perf_counter() - started, True)
            log.warning("shadow model %s failed: %s", shadow, err)
            return
        took = time.perf_counter() - started
        stat.requests += 1
        stat.items += len(answers)
        stat.latency_s += took
        stat.latency_max_s = max(stat.latency_max_s, took)
        self._metrics.record(shadow, "shadow", took, False)
        if self.capture is not None:
            is_body = self.decode_body is not None
            self.capture.record(items, answers, model=shadow, role="shadow", took_s=took, is_body=is_body)
        self.agreement.add(primary, answers)
        if self._metrics.agreement is not None and self.agreement.compared:
            tags = {"spec": self.served.spec_name, "model": shadow, "role": "shadow"}
            self._metrics.agreement.set(self.agreement.same_label / self.agreement.compared, tags=tags)

    def captured(self, items: list[Any], results: list[dict[str, Any]], run_id: str, took_s: float) -> None:
        """Decoded items answered past ``predict`` (the composed ingress's tensors): captured alike."""
        if self.capture is not None:
            role = self.stats[run_id].role if run_id in self.stats else "named"
            self.capture.record(items, results, model=run_id, role=role, took_s=took_s)

    def close(self) -> None:
        """The replica stops (Serve's graceful shutdown): the capture writes what it holds."""
        if self._poller is not None:
            self._poller.cancel()
        if self.capture is not None:
            self.capture.close()

    def summary(self) -> dict[str, Any]:
        """What ``/healthz`` shows: the roles, the aliases, per-model counts, the shadow's agreement."""
        out: dict[str, Any] = {
            "models": {run_id: stat.as_dict() for run_id, stat in self.stats.items()},
        }
        if self.aliases:
            out["aliases"] = dict(self.aliases)
        if self.canary_run:
            out["canary"] = {"model": self.canary_run, "percent": self.traffic.canary_percent}
        if self.shadow_run:
            calls = self.shadow_stats.as_dict()
            del calls["role"]
            out["shadow"] = {"model": self.shadow_run, **calls, "agreement": self.agreement.as_dict()}
        if self.capture is not None:
            out["capture"] = self.capture.summary()
        return out
