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
import re
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
RAY_ERROR = re.compile(r"\[\S+ \S+ E \d+")  # "[2026-12-01 10:37:50,730 E 1234 5678] worker_pool.cc:..."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Worker ports: each node a range of its own in 11000-18999: below rayline's service ports
# (20000-29999, serving/ports.py) and the kernel's ephemeral ports (32768 up), where free_port()
# picks come from. A raylet with no free port left starts no worker ("No available ports"):
# actors and Train workers wait for ever while their CPUs stay reserved.
WORKER_PORTS = 200
_RANGES = 40
_FIRST_RANGE = secrets.randbelow(_RANGES)


def _node_ports(index: int) -> list[str]:
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    args = [f"{k}={v}" for k, v in ports.items()]
    low = 11000 + ((_FIRST_RANGE + index) % _RANGES) * WORKER_PORTS
    return [*args, f"--min-worker-port={low}", f"--max-worker-port={low + WORKER_PORTS - 1}"]


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
            *_node_ports(0),
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
                *_node_ports(i),
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
            if proc.name.isdigit() and any(m in _cmdline(int(proc.name)) for m in marks):
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
            time.sleep(0.25)
        raise RuntimeError(f"{self.nodes} Ray nodes were not alive within {timeout_s:.0f} s")

    def _get(self, path: str) -> dict:
        request = urllib.request.Request(f"{self.dashboard}{path}", headers=self.headers())
        with urllib.request.urlopen(request, timeout=30) as reply:
            return dict(json.load(reply)["data"])

    def cpus_in_use(self) -> float:
        """CPUs held by any actor, task or placement group (Ray's autoscaler report)."""
        usage = self._get("/api/cluster_status")["clusterStatus"]["loadMetricsReport"]["usage"]
        return float(usage.get("CPU", [0.0])[0])

    def wait_idle(self, timeout_s: float = 120) -> None:
        """Return once no CPU is held; else raise with what holds them. A test that leaves work
        behind fails in its own teardown, not in the next test as a starved cluster."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, KeyError, ValueError):
                if self.cpus_in_use() == 0:
                    return
            time.sleep(0.25)
        raise AssertionError(f"the cluster was still busy {timeout_s:.0f} s after the test:\n{self.describe()}")

    def describe(self) -> str:
        """Nodes, live actors and placement groups, and this machine's free memory and disk."""
        lines = []
        with contextlib.suppress(OSError, KeyError, ValueError):
            lines.append(f"CPUs in use: {self.cpus_in_use()}")
        for what, path in (
            ("node", "/api/v0/nodes?detail=1&limit=100"),
            ("actor", "/api/v0/actors?detail=1&limit=1000&filter_keys=state&filter_predicates=!%3D&filter_values=DEAD"),
            ("placement group", "/api/v0/placement_groups?detail=1&limit=1000"),
        ):
            try:
                found = self._get(path)["result"]["result"]
            except (OSError, KeyError, ValueError) as exc:
                lines.append(f"{what}s: unreadable ({exc})")
                continue
            for item in found:
                keys = ("node_id", "state", "state_message", "resources_total", "class_name", "job_id", "pid",
                        "required_resources", "placement_group_id", "stats", "bundles", "death_cause")  # fmt: skip
                lines.append(f"{what}: " + ", ".join(f"{k}={item[k]}" for k in keys if item.get(k)))
        for log in sorted(self.root.rglob("raylet*.out")):  # the raylets' errors: no port, no memory, ...
            errors = [line for line in log.read_text(errors="replace").splitlines() if RAY_ERROR.match(line)]
            lines += [f"{log.name}: {line[:300]}" for line in errors[-10:]]
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        lines.append(f"MemAvailable: {meminfo['MemAvailable'].strip()}; disk free under {self.root}: "
                     f"{shutil.disk_usage(self.root).free / 2**30:.1f} GiB")  # fmt: skip
        return "\n".join(lines)

    def stop(self) -> None:
        """SIGTERM this cluster's processes in ``ray stop``'s order (the raylets, then the other
        processes, then the GCS), then SIGKILL what is left. Raylets and GCS signalled at once each
        wait for the other and were killed only after the whole grace period (10 s a cluster)."""
        pids = self._raylet_pids()
        commands = {pid: _cmdline(pid) for pid in pids}
        raylets = {p for p in pids if "/raylet/raylet " in commands[p]}
        gcs = {p for p in pids if "/gcs/gcs_server " in commands[p]}
        for bucket in (raylets, pids - raylets - gcs, gcs):
            _terminate(bucket, grace_s=10.0)
        _terminate(self._raylet_pids(), grace_s=0.0)  # anything started meanwhile
        shutil.rmtree(self.root, ignore_errors=True)


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def _terminate(pids: set[int], grace_s: float) -> None:
    """SIGTERM ``pids``, and SIGKILL those still running after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)}
            if pids:
                time.sleep(0.1)


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
