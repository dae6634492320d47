"""How HTTP reaches the replicas: the environment each ingress mode sets, and HAProxy kept private."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rayline.serving._haproxy import haproxy_setup, ingress_env


@contextmanager
def configured(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[str]:
    """HAProxy's template rewritten by ``haproxy_setup`` under ``env``; yields the folder of its files."""
    from ray.serve._private import haproxy

    folder = os.path.dirname(env["RAY_SERVE_HAPROXY_SOCKET_PATH"])
    try:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", haproxy.HAPROXY_CONFIG_TEMPLATE)
        haproxy_setup()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_proxy_and_direct_modes_turn_haproxy_off() -> None:
    assert ingress_env("proxy", "127.0.0.1", 8000)["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    direct = ingress_env("direct", "127.0.0.1", 8000)
    assert direct["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1" and direct["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_haproxy_setup_listens_on_private_unix_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.serve._private import haproxy

    env = ingress_env("haproxy", "127.0.0.1", 8000)
    folder = os.path.dirname(env["RAY_SERVE_HAPROXY_SOCKET_PATH"])
    try:
        assert len(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]) < 100  # fits a unix socket name
        assert "RAY_SERVE_HAPROXY_STATS_PORT" not in env  # no TCP port picked early, bound late
        # Serve's fallback proxy gets a port of this service's own (not 8500, shared by every service)
        fallback = {int(env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"]), int(env["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"])}
        assert len(fallback) == 2 and 8000 not in fallback and all(20000 <= p < 30000 for p in fallback)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", haproxy.HAPROXY_CONFIG_TEMPLATE)
        haproxy_setup()
        template = haproxy.HAPROXY_CONFIG_TEMPLATE
        assert f"bind {folder}/stats.sock" in template and f"bind {folder}/prometheus.sock" in template
        binds = [line.strip()[5:] for line in template.splitlines() if line.strip().startswith("bind ")]
        # Only the service's own frontends stay on TCP, on the host the user gave.
        assert all(b.startswith(folder) or "config.frontend_host" in b or "grpc_frontend_host" in b for b in binds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_exposed_haproxy_keeps_tcp_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.serve._private import haproxy

    env = ingress_env("haproxy", "0.0.0.0", 8000)
    try:
        assert int(env["RAY_SERVE_HAPROXY_STATS_PORT"]) != int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        before = haproxy.HAPROXY_CONFIG_TEMPLATE
        monkeypatch.setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", before)
        haproxy_setup()
        folder = os.path.dirname(env["RAY_SERVE_HAPROXY_SOCKET_PATH"])
        assert f"bind {folder}/" not in haproxy.HAPROXY_CONFIG_TEMPLATE  # the listeners stay on TCP
        assert before.count("bind ") == haproxy.HAPROXY_CONFIG_TEMPLATE.count("bind ")
    finally:
        shutil.rmtree(os.path.dirname(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]), ignore_errors=True)


def test_haproxy_answers_its_own_errors_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from ray.serve._private import haproxy

    env = ingress_env("haproxy", "127.0.0.1", 8000)
    with configured(monkeypatch, env) as folder:
        for code in (502, 503, 504):
            assert f"errorfile {code} {folder}/{code}.http" in haproxy.HAPROXY_CONFIG_TEMPLATE
            head, body = Path(f"{folder}/{code}.http").read_bytes().decode().split("\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {code} ") and "application/json" in head
            assert f"Content-Length: {len(body)}" in head and json.loads(body)["error"]
        default = haproxy.HAPROXY_CONFIG_TEMPLATE.split("\nbackend default_backend\n")[1].splitlines()[0]
        assert f"status 503 content-type application/json file {folder}/starting.json" in default
        assert json.loads(Path(f"{folder}/starting.json").read_text())["error"].startswith("the model is starting")
        assert "empty-response" in env["RAY_SERVE_HAPROXY_RETRY_ON"]  # predictions are replayed, not lost


def test_haproxy_sheds_at_the_door(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each replica is sent at most what it holds; past that HAProxy answers the 429 itself, JSON with
    Retry-After (gRPC: RESOURCE_EXHAUSTED), the same answer as a replica's own refusal."""
    import json

    from ray.serve._private import haproxy

    from rayline.serving.config import shedding
    from rayline.spec import ServeSpec

    shed = shedding(ServeSpec(max_ongoing_requests=1, max_queued_requests=2, retry_after_s=2.5))
    assert shed == (3, 3)  # Retry-After is rounded up, as Ray writes it
    with configured(monkeypatch, ingress_env("haproxy", "127.0.0.1", 8000, shed=shed)) as folder:
        template = haproxy.HAPROXY_CONFIG_TEMPLATE
        servers = [line for line in template.splitlines() if "server {{ server.name }}" in line and "observe" in line]
        assert len(servers) == 2 and all(" check maxconn 3" in line for line in servers)  # replicas: HTTP, gRPC
        full = "if { nbsrv gt 0 } { be_conn_free eq 0 }"
        refuse = f"http-request return status 429 content-type application/json file {folder}/429.json"
        assert f"{refuse} hdr Retry-After 3 {full}" in template
        assert "hdr grpc-status 8 hdr grpc-message " in template and template.count(full) == 2
        body = json.loads(Path(f"{folder}/429.json").read_text())
        assert body == {
            "error": "the service is at capacity: every replica is busy and its queue is full; retry after 3 s"
        }
    unshed = ingress_env("haproxy", "127.0.0.1", 8000)  # without ``shed``, only the replicas refuse
    shutil.rmtree(os.path.dirname(unshed["RAY_SERVE_HAPROXY_SOCKET_PATH"]), ignore_errors=True)
    assert unshed["RAYLINE_HAPROXY_SHED"] == ""
