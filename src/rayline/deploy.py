"""The same spec without a rayline process holding it: a Ray Serve config, and KubeRay manifests.

- ``serve_config``: a Serve config (``serve run``, ``serve deploy``) whose application is built by
  ``rayline.serving.app:build`` from the spec and the model to serve.
- ``rayservice``: a KubeRay ``RayService`` serving that config.
- ``rayjob``: a KubeRay ``RayJob`` whose entrypoint is ``rayline run`` on the spec, mounted from a
  ``ConfigMap``.

Pod resources come from the spec (Serve replicas x ``serve.num_cpus``/``num_gpus``; Ray Train
workers x ``scaling.cpus_per_worker``, GPUs with ``scaling.use_gpu``). The registry the pods use
is the tracking server passed as ``tracking_uri`` (``MLFLOW_TRACKING_URI`` in every container).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from rayline._version import __version__
from rayline.serving.app import BUILDER
from rayline.serving.oip.stubs import SERVICER as GRPC_SERVICER
from rayline.spec import Spec

RAY_VERSION = "2.60.0"
SPEC_MOUNT = "/rayline"


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # untyped yaml stubs
    """Multi-line strings (serveConfigV2, the ConfigMap's spec) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def to_yaml(*documents: Any) -> str:
    """YAML for people to read and Kubernetes to apply: keys in order, multi-line text as blocks."""
    return str(yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True))


def spec_mapping(spec: Spec) -> dict[str, Any]:
    """The spec as a mapping of what differs from the defaults (the same Spec when loaded again)."""
    dumped: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    return dumped


def serve_config(
    spec: Spec,
    *,
    model: str,
    host: str = "0.0.0.0",
    port: int | None = None,
    registry_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Ray Serve config deploying the spec's service for ``model`` (best, latest or a run id).

    ``registry_env``: the variables naming the registry (``MLFLOW_TRACKING_URI`` or
    ``RAYLINE_HOME``), set in the application's runtime env so that the builder, wherever the
    cluster runs it, reads the registry the config was printed from."""
    application: dict[str, Any] = {
        "name": spec.name,
        "route_prefix": "/",
        "import_path": BUILDER,
        "args": {"spec": spec_mapping(spec), "model": model},
    }
    if registry_env:
        application["runtime_env"] = {"env_vars": dict(registry_env)}
    config: dict[str, Any] = {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port or spec.serve.port or 8000},
    }
    if spec.serve.grpc_port:  # the Open Inference Protocol over gRPC (0, any free port, is for one machine)
        config["grpc_options"] = {"port": spec.serve.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}
    config["applications"] = [application]
    return config


def _name(spec: Spec) -> str:
    """A Kubernetes object name: lowercase letters, digits and '-' (RFC 1123)."""
    cleaned = "".join(c if c.isalnum() else "-" for c in spec.name.lower()).strip("-")
    return cleaned[:50] or "rayline"


def _env(tracking_uri: str | None) -> list[dict[str, str]]:
    return [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri}] if tracking_uri else []


def _container(
    name: str, image: str, cpus: float, gpus: float, memory_gi: int, env: list[dict[str, str]]
) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(max(1, math.ceil(cpus))), "memory": f"{memory_gi}Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = max(1, math.ceil(gpus))
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"limits": limits, "requests": dict(limits)},
    }
    if env:
        container["env"] = env
    return container


def _cluster(
    image: str, *, workers: int, cpus: float, gpus: float, tracking_uri: str | None, volumes: bool = False
) -> dict[str, Any]:
    """A RayCluster spec: a head that schedules nothing heavy, and ``workers`` worker pods."""
    env = _env(tracking_uri)
    head = _container("ray-head", image, 2, 0, 8, env)
    head["ports"] = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": 8000, "name": "serve"},
    ]
    head_pod: dict[str, Any] = {"containers": [head]}
    if volumes:
        head["volumeMounts"] = [{"name": "spec", "mountPath": SPEC_MOUNT}]
        head_pod["volumes"] = [{"name": "spec", "configMap": {"name": "SPEC_CONFIGMAP"}}]
    worker = _container("ray-worker", image, cpus, gpus, max(4, math.ceil(cpus) * 4), env)
    return {
        "rayVersion": RAY_VERSION,
        "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": {"spec": head_pod}},
        "workerGroupSpecs": [
            {
                "groupName": "workers",
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": {},
                "template": {"spec": {"containers": [worker]}},
            }
        ],
    }


def rayservice(spec: Spec, *, model: str, image: str, tracking_uri: str | None) -> dict[str, Any]:
    """A KubeRay RayService serving the spec's model: one worker pod per Serve replica."""
    serve = spec.serve
    replicas = serve.num_replicas or (serve.autoscaling.max_replicas if serve.autoscaling else 1)
    config = serve_config(spec, model=model, port=8000)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": _name(spec), "labels": {"app.kubernetes.io/managed-by": f"rayline-{__version__}"}},
        "spec": {
            "serveConfigV2": to_yaml(config),
            "rayClusterConfig": _cluster(
                image, workers=replicas, cpus=serve.num_cpus, gpus=serve.num_gpus, tracking_uri=tracking_uri
            ),
        },
    }


def rayjob(spec: Spec, *, image: str, tracking_uri: str | None) -> list[dict[str, Any]]:
    """A ConfigMap holding the spec (as loaded: with its --set overrides) and a KubeRay RayJob
    running ``rayline run`` on it."""
    name = _name(spec)
    workers = spec.scaling.workers
    cpus = spec.scaling.cpus_per_worker or 1.0
    gpus = spec.scaling.gpus_per_worker if spec.scaling.use_gpu else 0.0
    cluster = _cluster(image, workers=workers, cpus=cpus, gpus=gpus, tracking_uri=tracking_uri, volumes=True)
    cluster["headGroupSpec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = f"{name}-spec"
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-spec"},
        "data": {"spec.yaml": to_yaml(spec_mapping(spec))},
    }
    job = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": f"rayline-{__version__}"}},
        "spec": {
            "entrypoint": f"rayline run {SPEC_MOUNT}/spec.yaml",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": cluster,
        },
    }
    return [configmap, job]
