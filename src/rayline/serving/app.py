"""A rayline service as a Ray Serve application.

``rayline serve`` builds it with ``application``; Ray builds the same one from a Serve config
(``serve run``, ``serve deploy``, a KubeRay RayService) through the application builder
``rayline.serving.app:build``, whose args are the spec and the model to serve (see
``config.serve_config``). Either way the model is looked up in the registry by run id, never by
a path from the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rayline import checkpoints
from rayline.registry import Registry, RunRecord, open_registry
from rayline.serving._auth import Access
from rayline.serving._edge import EdgeOptions
from rayline.serving._routing import Traffic
from rayline.serving.config import deployment_options, topology
from rayline.spec import Spec, spec_from_dict

BUILDER = "rayline.serving.app:build"


class BuildArgs(BaseModel):
    """The ``args`` of a Serve config application whose ``import_path`` is ``BUILDER``."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="the rayline spec, as a mapping")
    model: str = Field(default="best", description="best, latest or a run id of the spec")


def traffic(spec: Spec, model: str) -> dict[str, Any]:
    """How the service splits its traffic: the model selector it was started with, the canary, the shadow."""
    canary = spec.serve.canary
    return Traffic(
        primary=model,
        canary=canary.model if canary else None,
        canary_percent=canary.percent if canary else 0.0,
        shadow=spec.serve.shadow,
        poll_s=spec.serve.alias_poll_s,
        capture=spec.serve.capture.model_dump() if spec.serve.capture else None,
    ).model_dump()


def application(
    spec: Spec,
    record: RunRecord,
    checkpoint: Path,
    registry: Registry,
    *,
    pack: bool = False,
    model: str | None = None,
) -> Any:
    """The spec's service for the registered run ``record`` (checkpoint in ``checkpoint``).

    ``model``: the selector the run was named by (an alias is followed as it moves; default: the run).
    ``pack``: hand the replicas the checkpoint's bytes rather than its path (replicas on other
    nodes cannot read this one's disk); by default, only when this process talks to a cluster.
    """
    from rayline.serving._composed import composed_app
    from rayline.serving._server import ModelServer

    auto = spec.serve.autoscaling
    edge = EdgeOptions(
        max_batch_size=spec.serve.max_batch_size,
        batch_wait_timeout_s=spec.serve.batch_wait_timeout_s,
        access=Access.of(spec.serve),
        max_request_bytes=spec.serve.max_request_bytes,
        grpc=spec.serve.grpc_port is not None,
        scales_to_zero=auto is not None and auto.min_replicas == 0,
        traffic=traffic(spec, model or record.run_id),
    )
    served = {
        "family": record.family,
        "checkpoint": checkpoints.pack(checkpoint) if pack else checkpoints.portable(checkpoint),
        "run_id": record.run_id,
        "spec_name": spec.name,
        "home": str(registry.home),
        "tracking_uri": registry.tracking_uri,
        "cpus": max(1, round(spec.serve.num_cpus)),
        "precision": spec.serve.precision,
    }
    options = deployment_options(spec.serve)
    if topology(spec.serve) == "composed":
        meta = checkpoints.read_meta(checkpoint)
        return composed_app(edge=edge, served=served, meta=meta, model_options=options)
    deployment: Any = ModelServer
    return deployment.options(**options).bind(edge, served)


def resolve(spec: Spec, model: str, registry: Registry) -> tuple[RunRecord, Path]:
    """``best``/``latest``/a run id of the spec -> its record and a local copy of its checkpoint."""
    record = registry.resolve(spec.name, model, metric=spec.metric, mode=spec.mode)
    return record, registry.checkpoint_dir(record.run_id)


def build(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``import_path: rayline.serving.app:build``).

    Runs where Ray builds the application (on the cluster for ``serve deploy``): the registry
    is the one that process sees (``MLFLOW_TRACKING_URI`` or ``RAYLINE_HOME`` in its runtime
    env), and the checkpoint travels to the replicas as bytes.
    """
    parsed = BuildArgs.model_validate(args)
    spec = spec_from_dict(parsed.spec, origin="serve config args.spec")
    registry = open_registry()
    record, checkpoint = resolve(spec, parsed.model, registry)
    Access.of(spec.serve).key()
    return application(spec, record, checkpoint, registry, pack=True, model=parsed.model)
