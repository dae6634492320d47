"""How HTTP reaches the replicas: the environment each ingress mode sets, and HAProxy kept private."""

from __future__ import annotations

import os
import shutil

import pytest

from rayline.serving._ingress import ingress_env, loopback_haproxy


def test_proxy_and_direct_modes_turn_haproxy_off() -> None:
    assert ingress_env("proxy", "127.0.0.1", 8000)["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    direct = ingress_env("direct", "127.0.0.1", 8000)
    assert direct["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1" and direct["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_loopback_haproxy_listens_on_private_unix_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
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
        loopback_haproxy()
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
        loopback_haproxy()
        assert before == haproxy.HAPROXY_CONFIG_TEMPLATE
    finally:
        shutil.rmtree(os.path.dirname(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]), ignore_errors=True)
