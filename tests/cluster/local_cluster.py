"""A real multi-node Ray cluster on this machine: ``ray start --head`` and ``ray start --address``.

Each node is its own raylet with its own ports; the cluster has its own temp folder (short: Ray's
socket paths must fit in 107 bytes) and is stopped by the process ids each node wrote there, never
by ``ray stop`` (which would stop every Ray on the machine, the suite's own included).

Run as a script to keep one up by hand: ``python tests/cluster/local_cluster.py [NODES]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_ports(head: bool) -> list[str]:
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    base = free_port()
    args = [f"{k}={v}" for k, v in ports.items()]
    # Worker ports: a range of their own per node, below the kernel's ephemeral ports (32768 up),
    # where the picks above come from.
    low = 11000 + (base % 80) * 100
    args += [f"--min-worker-port={low}", f"--max-worker-port={low + 99}"]
    return args


@dataclass
class LocalCluster:
    """``nodes`` Ray nodes of ``cpus`` CPUs each; ``address`` for RAY_ADDRESS, ``dashboard`` for jobs."""

    nodes: int = 2
    cpus: int = 1
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rlc-", dir="/tmp")))
    address: str = ""
    dashboard: str = ""
    pids: list[int] = field(default_factory=list)
    node_env: dict[str, str] = field(default_factory=dict)  # e.g. how the nodes reach object storage

    def env(self) -> dict[str, str]:
        """The environment nodes are started with, and drivers need: Ray's token auth on, with
        this cluster's own token (as a real cluster's users hold theirs), whatever ~/.ray holds."""
        token = self.root / "auth_token"
        if not token.exists():
            token.write_text(secrets.token_hex(32))
            token.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "RAY_AUTH_TOKEN"}}
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        env.update(self.node_env)
        # A job's entrypoint runs `python` from PATH: this environment's, as a cluster image's would be.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(self.root / 'auth_token').read_text().strip()}"}

    def start(self, timeout_s: float = 120) -> LocalCluster:
        gcs, dash = free_port(), free_port()
        self.address = f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dash}"
        before = self._raylet_pids()
        head = [
            str(RAY),
            "start",
            "--head",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus}",
            "--num-gpus=0",
            f"--temp-dir={self.root / 'ray'}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={free_port()}",
            '--resources={"node_0": 1}',
            *_node_ports(True),
        ]
        self._run(head, timeout_s)
        for i in range(1, self.nodes):
            worker = [
                str(RAY),
                "start",
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={self.cpus}",
                "--num-gpus=0",
                f'--resources={{"node_{i}": 1}}',
                *_node_ports(False),
            ]
            self._run(worker, timeout_s)
        self.pids = sorted(self._raylet_pids() - before)
        self._wait_ready(timeout_s)
        return self

    def _run(self, cmd: list[str], timeout_s: float) -> None:
        out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout_s, check=False)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    def _raylet_pids(self) -> set[int]:
        """Every process of this cluster: they all run out of its temp folder or name its GCS port."""
        marks = (str(self.root), self.address) if self.address else (str(self.root),)
        found = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if any(m in cmdline for m in marks):
                    found.add(int(proc.name))
        found.discard(os.getpid())
        return found

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                request = urllib.request.Request(f"{self.dashboard}/nodes?view=summary", headers=self.headers())
                with urllib.request.urlopen(request, timeout=5) as reply:
                    alive = [n for n in json.load(reply)["data"]["summary"] if n["raylet"]["state"] == "ALIVE"]
                    if len(alive) >= self.nodes:
                        return
            time.sleep(1)
        raise RuntimeError(f"{self.nodes} Ray nodes were not alive within {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM this cluster's processes, then SIGKILL what is left after 10 s."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
            pids = self._raylet_pids()
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = {p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)}
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    return True


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the nodes on `kill` too
    cluster = LocalCluster(
        nodes=int(sys.argv[1]) if len(sys.argv) > 1 else 2, cpus=int(sys.argv[2]) if len(sys.argv) > 2 else 1
    ).start()
    print(f"RAY_ADDRESS={cluster.address}  dashboard {cluster.dashboard}  root {cluster.root}", flush=True)
    try:
        signal.pause()
    finally:
        cluster.stop()
