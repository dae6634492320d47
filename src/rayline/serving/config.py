"""Spec ``serve`` section -> Ray Serve deployment options and ingress settings."""

from __future__ import annotations

import math
from typing import Any

from rayline.serving._statuses import OVERLOADED
from rayline.spec import ServeSpec


def overload_options(serve: ServeSpec) -> dict[str, Any]:
    """How the deployment that takes HTTP and gRPC requests sheds load: the one place a full queue
    becomes an answer.

    Past ``max_ongoing_requests`` in flight, a request waits in a queue of ``max_queued_requests``
    (per replica behind HAProxy and with direct ingress, per proxy with Serve's proxy); one that
    finds it full is refused by Ray Serve at once, before the app runs: HTTP 429 with
    ``Retry-After`` (Ray's default would be 503, which clients and balancers read as "down"), gRPC
    RESOURCE_EXHAUSTED; its body is rayline's JSON error (``_overload``). Without a bound, Serve
    queues without end and a burst becomes a hang. Behind HAProxy the same bound is also kept at
    the door (``shedding``).
    """
    return {
        "max_queued_requests": serve.max_queued_requests,
        "backpressure_config": {"status_code": OVERLOADED.http, "retry_after_s": serve.retry_after_s},
    }


def shedding(serve: ServeSpec) -> tuple[int, int]:
    """What one replica of the deployment taking HTTP holds (in flight + queued) and the
    ``Retry-After`` seconds of a 429 (``retry_after_s`` rounded up, as Ray writes it): what the
    HAProxy ingress refuses at the door (``_haproxy``), where Ray's count would miss a burst."""
    return serve.max_ongoing_requests + serve.max_queued_requests, max(0, math.ceil(serve.retry_after_s))


def deployment_options(serve: ServeSpec) -> dict[str, Any]:
    """Options for ``Deployment.options``: replicas or autoscaling, fractional resources, queueing."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": serve.num_cpus, "num_gpus": serve.num_gpus},
        "max_ongoing_requests": serve.max_ongoing_requests,
        "logging_config": {"enable_access_log": serve.access_log},
        **overload_options(serve),
    }
    if serve.autoscaling is not None:
        auto = serve.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": auto.min_replicas,
            "max_replicas": auto.max_replicas,
            "initial_replicas": auto.initial_replicas,
            "target_ongoing_requests": auto.target_ongoing_requests,
            "upscale_delay_s": auto.upscale_delay_s,
            "downscale_delay_s": auto.downscale_delay_s,
            "metrics_interval_s": auto.metrics_interval_s,
            "look_back_period_s": auto.look_back_period_s,
        }
    else:
        options["num_replicas"] = serve.num_replicas or 1
    return options


def topology(serve: ServeSpec) -> str:
    """``composed`` (a preprocessor deployment in front of the model) or ``fused`` (one deployment).

    The extra hop earns its cost when model replicas hold GPUs: decoding requests is CPU work
    that should scale apart from them. Otherwise one replica does both, a hop fewer per batch.
    """
    if serve.topology != "auto":
        return serve.topology
    return "composed" if serve.num_gpus > 0 else "fused"
