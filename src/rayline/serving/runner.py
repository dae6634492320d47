"""Start, wait for, and stop a rayline service on Ray Serve."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rayline import runtime
from rayline.errors import RaylineError, ServeError, map_error
from rayline.registry import Registry, open_registry
from rayline.serving._auth import Access
from rayline.serving._haproxy import ingress_env, stop_haproxy
from rayline.serving.app import application, resolve
from rayline.serving.config import shedding
from rayline.serving.oip import stubs
from rayline.serving.ports import free_port
from rayline.spec import Spec

log = logging.getLogger(__name__)

# A replica runs user code on an event loop of its own by default, so every request crosses
# threads on its way in and out; on one loop (what Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED also
# sets, with the next setting) it does not (docs/benchmarks.md).
ONE_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
# Likewise for the routers of the handles a replica holds (the composed ingress calls the
# preprocessor and the model through them). Ray's processes only: a driver calling a handle
# from plain synchronous code needs the router's own loop.
RAY_ONLY = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}


@dataclass
class Service:
    """A running service: its URL, the model it serves, and a Python handle to it."""

    name: str
    url: str
    model_run_id: str
    handle: Any
    grpc_address: str | None = None  # host:port of the Open Inference Protocol over gRPC
    metrics_url: str | None = None  # this node's Prometheus endpoint (Ray's metrics, rayline's among them)
    # Serve was started for this service: stopping the service stops it too, freeing its port and
    # route "/" for the next rayline.serve (Serve keeps its first port whatever a later start names).
    owns_serve: bool = field(default=False, repr=False)

    def stop(self) -> None:
        from ray import serve

        serve.delete(self.name)
        if self.owns_serve:
            serve.shutdown()


def _serve_running() -> bool:
    """Whether Ray Serve runs in this process's Ray (a controller exists)."""
    import ray

    if not ray.is_initialized():
        return False
    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    except ValueError:
        return False
    return True


def _check_port(host: str, port: int, hint: str = "pick another --port") -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As servers do: connections of a previous server in TIME_WAIT must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            taken = err.errno in (errno.EADDRINUSE, errno.EACCES)
            raise ServeError(
                f"cannot listen on {host}:{port}: {err.strerror}", hint=hint if taken else "check --host"
            ) from None


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt):")


def deploy_failure(app_name: str) -> str | None:
    """Why Serve gave up deploying ``app_name`` (a replica that cannot start), or None.

    Serve retries a replica whose constructor raises a few times, then marks the application
    DEPLOY_FAILED with the traceback; the reason is its last line (the exception)."""
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # the controller is busy or restarting: no verdict yet
        return None
    if app is None or str(app.status) not in ("DEPLOY_FAILED", "ApplicationStatus.DEPLOY_FAILED"):
        return None
    messages = [d.message for d in app.deployments.values() if d.message] or [app.message]
    lines = [line.strip() for text in messages for line in text.splitlines() if line.strip()]
    # The exception's own line, not what a native library appends after it (xgboost: "[bt] ..." frames).
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (raised or lines or ["a replica could not start"])[-1][:500]


def wait_healthy(url: str, timeout_s: float, failed: Callable[[], str | None] | None = None) -> dict[str, Any]:
    """Poll ``/healthz`` until it answers 200; ``failed`` (checked every few seconds) ends the
    wait early with its reason: a model that cannot load is an error in seconds, not a timeout."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    next_check = time.monotonic() + 2
    while time.monotonic() < deadline:
        if failed is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + 2
            reason = failed()
            if reason is not None:
                raise ServeError(f"the model could not be served: {reason}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                if resp.status == 200:
                    info: dict[str, Any] = json.loads(resp.read())
                    return info
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as err:
            last = str(getattr(err, "reason", err))
        time.sleep(0.25)
    raise ServeError(f"service at {url} did not become healthy within {timeout_s:.0f} s (last: {last})")


def start(
    spec: Spec,
    *,
    model: str = "best",
    host: str | None = None,
    port: int | None = None,
    registry: Registry | None = None,
    timeout_s: float = 180.0,
) -> Service:
    """Deploy the spec's model on Ray Serve and return once /healthz answers."""
    from ray import serve

    auto, share = spec.serve.autoscaling, spec.serve.num_gpus
    replicas = (spec.serve.num_replicas or 1) if auto is None else max(1, auto.min_replicas)
    runtime.require_gpus(share * replicas, f"serve.num_gpus={share:g} x {replicas} replica(s)")
    Access.of(spec.serve).key()  # a configured key that is missing fails here, in one line, not in every replica
    registry = registry or open_registry()
    host = host or spec.serve.host
    port = spec.serve.port if port is None else port
    import ray

    hook = None
    added: dict[str, str] = {}
    grpc_port = spec.serve.grpc_port
    if grpc_port and grpc_port == port:
        raise ServeError(f"serve.grpc_port {grpc_port} is the HTTP port too", hint="pick another serve.grpc_port")
    if runtime.cluster_address() is None:
        port = port or free_port(host)
        _check_port(host, port)  # a taken port would otherwise surface as a health-check timeout
        if grpc_port is not None:
            grpc_port = grpc_port or free_port(host)
            _check_port(host, grpc_port, hint="pick another serve.grpc_port")
        if ray.is_initialized():
            # Serve reads its ingress flags when Ray's processes start; this Ray is already up.
            log.warning("Ray is already running in this process: serve.ingress=%s is not applied", spec.serve.ingress)
        else:
            added = {name: value for name, value in RAY_ONLY.items() if name not in os.environ}  # a user's own wins
            ingress = ingress_env(spec.serve.ingress, host, port, shed=shedding(spec.serve))
            os.environ.update({**ONE_LOOP, **added, **ingress})
            hook = "rayline.serving._haproxy.haproxy_setup"
    elif port == 0 or grpc_port == 0:  # the proxies listen on the cluster's nodes, where no port can be checked here
        which = "serve.port" if port == 0 else "serve.grpc_port"
        raise ServeError(f"{which} 0 (any free port) works on embedded Ray only", hint="set a port for a cluster")
    try:
        record, checkpoint = runtime.init_while(partial(resolve, spec, model, registry), setup_hook=hook)
    except BaseException:
        stop_haproxy()  # its folder, made for this service, which will not start
        raise
    finally:
        for name in added:  # Ray's processes took their environment when Ray started
            os.environ.pop(name, None)
    # A canary or shadow that names nothing fails here, in one line, not in every replica.
    canary = spec.serve.canary
    for role, selector in (("canary", canary.model if canary else None), ("shadow", spec.serve.shadow)):
        if selector:
            try:
                other = registry.resolve(spec.name, selector, metric=spec.metric, mode=spec.mode)
            except RaylineError as err:
                raise ServeError(f"serve.{role} {selector!r}: {err.message}") from None
            if other.run_id == record.run_id:  # it would split traffic, or compare answers, with itself
                raise ServeError(
                    f"serve.{role} {selector!r} is the served model itself (run {record.run_id[:12]})",
                    hint=f"name another model for the {role}",
                )
    grpc = {"port": grpc_port, "grpc_servicer_functions": [stubs.SERVICER]} if grpc_port is not None else None
    owns_serve = not _serve_running()
    try:
        serve.start(http_options={"host": host, "port": port}, grpc_options=grpc)
    except Exception as err:  # e.g. HAProxy failing to start, raised from its manager actor
        raise ServeError(f"could not start Ray Serve on {host}:{port}: {map_error(err, during='serving')}") from None
    app = application(spec, record, checkpoint, registry, model=model)
    try:
        handle = serve.run(app, name=spec.name, route_prefix="/", blocking=False)
    except Exception as err:  # serve.run waits for the replicas: one that cannot start ends here
        reason = deploy_failure(spec.name)
        if reason is not None:
            raise ServeError(f"the model could not be served: {reason}") from None
        raise ServeError(f"could not deploy {spec.name}: {map_error(err, during='serving')}") from None
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if auto is None or auto.min_replicas > 0:
        wait_healthy(f"http://{probe}:{port}", timeout_s, failed=partial(deploy_failure, spec.name))
    # else: serve.run has seen the application running with no replica; a request to /healthz
    # would wake one, and the service is to stay idle until its first user.
    grpc_address = f"{probe}:{grpc_port}" if grpc_port else None
    return Service(
        name=spec.name,
        url=url,
        model_run_id=record.run_id,
        handle=handle,
        grpc_address=grpc_address,
        metrics_url=_metrics_url(),
        owns_serve=owns_serve,
    )


def _metrics_url() -> str | None:
    """Where this node's Ray exports its metrics (Prometheus text), when this process runs the node."""
    import ray

    if runtime.cluster_address() is not None:
        return None  # each node of a cluster exports its own; Prometheus finds them by Ray's service discovery
    try:
        node = next(n for n in ray.nodes() if n.get("Alive"))
        return f"http://{node['NodeManagerAddress']}:{int(node['MetricsExportPort'])}/metrics"
    except (StopIteration, KeyError, ValueError, TypeError):
        return None


class _DropRayNotices(io.TextIOBase):
    """stdout without the notices Ray's driver thread prints for its own processes ("(raylet) ...").

    Stopping Serve kills its controller on purpose, and Ray then prints "Task
    ServeController.graceful_shutdown failed ... killed by `ray.kill`" to stdout, from a thread,
    even with worker logs off. A clean stop shows none of it; RAYLINE_VERBOSE=1 keeps it."""

    def __init__(self, sink: Any) -> None:
        self.sink, self._dropped = sink, False

    def write(self, text: str) -> int:
        dropped = "(raylet)" in text or (self._dropped and text == "\n")
        self._dropped = "(raylet)" in text
        if not dropped:
            self.sink.write(text)
        return len(text)

    def flush(self) -> None:
        self.sink.flush()


def shutdown() -> None:
    """Stop Serve and the embedded Ray (``serve.shutdown`` alone would start Ray if it is not up).

    Serve's controller stops each replica gracefully: requests in flight are answered first."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    quiet = os.environ.get("RAYLINE_VERBOSE") != "1"
    with contextlib.redirect_stdout(_DropRayNotices(sys.stdout)) if quiet else contextlib.nullcontext():
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()
            stop_haproxy()
