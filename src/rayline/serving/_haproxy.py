"""How HTTP reaches the replicas:

- ``haproxy`` (default): Ray Serve's HAProxy ingress load-balances over replicas that serve HTTP
  themselves (direct ingress); several times the requests/s of the proxy path (docs/benchmarks.md).
- ``proxy``: Ray Serve's Python HTTP proxy forwards each request to a replica (a hop per request).
- ``direct``: replicas listen on their own ports (30000+) for an external load balancer; the
  proxy keeps answering on --port.

``haproxy_setup`` (a Ray worker setup hook) adjusts Ray 2.60's HAProxy template in three ways.
It sheds load at the door (``_shed_at_the_door``): each replica is sent at most what it holds
(``serve.max_ongoing_requests`` + ``serve.max_queued_requests``) and a request finding every one
full is answered 429 with ``Retry-After`` by HAProxy itself, as rayline's JSON error. Left to the
replicas, a burst on new connections was not refused but answered one by one: a replica whose
model computes on its event loop accepts one connection per turn of that loop (uvloop's accept;
docs/serving.md), so the others waited in its listen queue, where no queue bound sees them.
HAProxy's own answers (no replica ready: 503; a replica gone mid-request: 502; 504; the app not
deployed yet while the model loads: 503 "starting") become JSON bodies like every other error,
instead of Ray's text/plain 500 and 404. And Ray binds HAProxy's stats
(8404) and Prometheus (9101) listeners to every interface: when the service host is a loopback
address, the hook rebinds those two listeners to unix sockets in the service's own folder
(``stats.sock``, ``prometheus.sock``): nothing rayline starts is reachable from the network
unless the user asked for it, and no TCP port is picked early and bound late (between the two,
Ray's many outgoing connections can take an ephemeral port, and HAProxy then fails to start).
Each service has its own folder and its own port for Serve's fallback proxy (HAProxy's backup
server), so two services on one machine do not collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from typing import Literal

from rayline.serving._overload import CALLBACK, CALLBACK_ENV, overloaded_body
from rayline.serving.ports import free_port

IngressMode = Literal["haproxy", "proxy", "direct"]
_LOOPBACK_ENV = "RAYLINE_HAPROXY_PRIVATE"
_SHED_ENV = "RAYLINE_HAPROXY_SHED"  # "<requests one replica holds> <Retry-After seconds>"
# What HAProxy answers itself when no replica does; Ray's pages are a text/plain 500 for all three.
ERROR_PAGES = {
    502: ("Bad Gateway", "a model replica closed the connection without answering; retry"),
    503: ("Service Unavailable", "no model replica is ready: the service is starting or replacing one; retry shortly"),
    504: ("Gateway Timeout", "a model replica did not answer in time"),
}


def _write_error_pages(folder: str, retry_after: int) -> None:
    for code, (reason, message) in ERROR_PAGES.items():
        body = json.dumps({"error": message})
        head = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        with open(f"{folder}/{code}.http", "w") as fh:
            fh.write(head + body)
    with open(f"{folder}/starting.json", "w") as fh:
        json.dump({"error": "the model is starting: no replica is ready yet; retry shortly"}, fh)
    with open(f"{folder}/429.json", "wb") as fb:
        fb.write(overloaded_body(str(retry_after)))


def ingress_env(mode: IngressMode, host: str, port: int, *, shed: tuple[int, int] | None = None) -> dict[str, str]:
    """Environment for the Ray processes (set before Ray starts; Serve reads it at import).

    ``port`` is the service's own port, which the ports picked here must not take. ``shed``: what
    one replica holds and the Retry-After of a 429 (``config.shedding``), for HAProxy to refuse
    what is beyond; None: the replicas alone refuse.
    """
    # Ray's proxy and the replicas' own HTTP servers write a full queue's 429 as rayline's JSON
    # error (``_overload``); a callback of the user's own wins (the 429 is then Ray's text).
    overload = {CALLBACK_ENV: os.environ.get(CALLBACK_ENV, CALLBACK)}
    if mode == "proxy":
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0", **overload}
    if mode == "direct":
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "0", **overload}
    # Short paths: HAProxy's socket paths must fit in a unix socket name (~107 bytes).
    folder = tempfile.mkdtemp(prefix="rl-hap-", dir="/tmp")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    taken = {port}
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Replicas wait this long for an external balancer to notice they are going away; the
        # embedded HAProxy is told directly, and Ray's 30 s default made Ctrl-C take 30 s.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
        # Ray's default (/tmp/haproxy-serve/<node>/) leaves a folder behind per service started.
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
        # A loaded machine can take longer than Ray's 30 s to start HAProxy and answer its socket.
        "RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S": "90",
        # HAProxy's backup server is Serve's own proxy, on 8500 by default: a second service on the
        # machine would find 8500 taken and send its requests to the first service's proxy.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port("127.0.0.1", taken)),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port("127.0.0.1", taken)),
        _LOOPBACK_ENV: "1" if loopback else "",
        _SHED_ENV: f"{shed[0]} {shed[1]}" if shed else "",
        **overload,
    }
    _write_error_pages(folder, shed[1] if shed else 1)
    # A user's own setting of these two wins.
    defaults = {
        # Ray starts 4 HAProxy threads; on 2 cores they contend with the replicas they feed.
        "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, max(1, (os.cpu_count() or 2) // 2))),
        # HAProxy would log every request to a socket that a Python actor parses into Serve's HTTP
        # metrics; with this off the replicas record the same metrics themselves, without the
        # parsing (docs/benchmarks.md: both settings together).
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        # A prediction has no side effects, so a request whose replica died before answering
        # (killed, crashed) is replayed on another replica instead of failing. Ray's default
        # replays only requests that never reached a replica, for apps whose requests are not pure.
        "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response",
    }
    env.update({name: os.environ.get(name, value) for name, value in defaults.items()})
    if not loopback:  # the user exposed the service: the listeners stay on TCP, on ports of their own
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port("0.0.0.0", taken))
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port("0.0.0.0", taken))
    return env


def stop_haproxy() -> None:
    """End HAProxy processes of this service (Ray leaves them running if the driver is killed)."""
    import shutil
    import signal

    config = os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "")
    folder = os.path.dirname(config)
    if not folder.startswith("/tmp/rl-hap-"):
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except OSError:
            continue
        if "haproxy" in cmdline and folder in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGTERM)
    shutil.rmtree(folder, ignore_errors=True)


def haproxy_setup() -> None:
    """Ray worker setup hook: HAProxy's own errors as JSON; on loopback, its stats/metrics listeners
    on unix sockets in the service folder."""
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1" or not os.environ.get("RAY_SERVE_HAPROXY_SOCKET_PATH"):
        return
    from ray.serve._private import haproxy

    folder = os.path.dirname(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"])
    template: str = getattr(haproxy, "HAPROXY_CONFIG_TEMPLATE")  # noqa: B009 (private, untyped)
    pages = template
    for code in ERROR_PAGES:
        pages = pages.replace(
            f"errorfile {code} {{{{ config.error_file_path }}}}", f"errorfile {code} {folder}/{code}.http"
        )
    if pages.count("errorfile 50") == len(ERROR_PAGES) and all(
        os.path.exists(f"{folder}/{c}.http") for c in ERROR_PAGES
    ):
        template = pages  # else a Ray upgrade moved them: Ray's plain-text 500 stays, nothing breaks
    # Before the app is deployed (the model loading) no route matches, and Ray's default backend
    # answers a text 404 "Path not found"; a rayline app takes every path, so that is "starting".
    default = re.compile(r"(backend default_backend\n)    http-request return status 404 [^\n]*\n")
    if os.path.exists(f"{folder}/starting.json"):
        starting = f"    http-request return status 503 content-type application/json file {folder}/starting.json"
        template = default.sub(lambda m: f"{m.group(1)}{starting} hdr Retry-After 1\n", template, count=1)
    if os.environ.get(_SHED_ENV):
        template = _shed_at_the_door(template, folder, os.environ[_SHED_ENV])
    if os.environ.get(_LOOPBACK_ENV):
        template = _private_listeners(template, folder)
    setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", template)  # noqa: B010


# Each replica's server line and the start of its backend: HTTP, then gRPC (HTTP/2 to the replicas).
_HTTP = (
    "{{ server.port }} check{% if config.observe_mark_down_enabled %}",
    "    # Enable HTTP connection reuse for better performance\n    http-reuse always\n",
)
_GRPC = (
    "{{ server.port }} proto h2 check{% if config.observe_mark_down_enabled %}",
    "    mode http\n    log global\n    http-reuse always\n",
)
_FULL = "if { nbsrv gt 0 } { be_conn_free eq 0 }"  # replicas up, and not one free slot among them


def _shed_at_the_door(template: str, folder: str, shed: str) -> str:
    """At most ``capacity`` requests at once to each replica (``maxconn``); a request finding no
    free slot on any replica gets the 429 with ``Retry-After`` (gRPC: RESOURCE_EXHAUSTED, code 8,
    in a trailers-only answer as Ray's own gRPC refusals).

    A Ray upgrade that moved these lines leaves the template as it is: the replicas still refuse
    what finds their queue full, as with the other ingresses."""
    capacity, retry_after = (int(part) for part in shed.split())
    anchors = [*_HTTP, *_GRPC]
    if any(template.count(a) != 1 for a in anchors) or not os.path.exists(f"{folder}/429.json"):
        return template
    message = json.loads(overloaded_body(str(retry_after)))["error"]
    refusals = (
        f"    http-request return status 429 content-type application/json file {folder}/429.json"
        f" hdr Retry-After {retry_after} {_FULL}\n",
        f"    http-request return status 200 content-type application/grpc hdr grpc-status 8"
        f' hdr grpc-message "{message}" {_FULL}\n',
    )
    for (server, backend), refuse in zip((_HTTP, _GRPC), refusals, strict=True):
        template = template.replace(server, server.replace(" check", f" check maxconn {capacity}"))
        template = template.replace(backend, backend + refuse)
    return template


def _private_listeners(template: str, folder: str) -> str:
    patched = template.replace("bind :{{ config.metrics_port }}", f"bind {folder}/prometheus.sock mode 600")
    patched = patched.replace("bind *:{{ config.stats_port }}", f"bind {folder}/stats.sock mode 600")
    if patched.count(f"bind {folder}/") != 2:  # a Ray upgrade changed the template: fail loudly, not open
        raise RuntimeError("rayline: Ray's HAProxy template has changed; cannot keep its listeners private")
    return patched
