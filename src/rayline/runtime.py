"""The only place Ray is started or joined, and where rayline's paths live.

Local (no ``RAY_ADDRESS``): an embedded Ray with explicit CPUs, a bounded object store, quiet
logs and no dashboard under tests. ``RAY_ADDRESS`` set: join that cluster with no local-only
arguments, since the cluster owns its resources.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rayline.errors import RegistryError, RuntimeStartError, SpecError, first_line

_GIB = 1024**3
T = TypeVar("T")


def home() -> Path:
    """``RAYLINE_HOME`` (default ``./.rayline``), absolute, created on first use."""
    path = Path(os.environ.get("RAYLINE_HOME") or ".rayline").expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RegistryError(
            f"RAYLINE_HOME {path}: cannot create the folder ({err.strerror})",
            hint="set RAYLINE_HOME to a folder you can write",
        ) from None
    return path


def storage_path() -> str:
    """Absolute storage for Ray Train/Tune results (Ray rejects relative paths).

    ``RAYLINE_STORAGE`` may name shared storage (``s3://...`` or an NFS mount) for clusters,
    where a local folder on the driver is not visible to workers on other nodes.
    """
    explicit = os.environ.get("RAYLINE_STORAGE")
    if explicit:
        return explicit if "://" in explicit else str(Path(explicit).expanduser().resolve())
    path = home() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


_SHARED_DISK_FIX = "or RAYLINE_SHARED_DISK=1 if every node sees this machine's disk"


def _cluster_nodes() -> int:
    """Alive nodes of the cluster joined at RAY_ADDRESS (0: an embedded Ray, or none yet)."""
    import ray

    if cluster_address() is None or not ray.is_initialized():
        return 0
    return len([n for n in ray.nodes() if n.get("Alive")])


def require_shared_registry() -> None:
    """On a cluster of several nodes, refuse a run registry on this machine's disk.

    A Serve application built on the cluster, or a job on another node, reads the registry: a
    SQLite file here is out of their reach. ``RAYLINE_SHARED_DISK=1`` says every node sees this
    machine's paths (one machine, an NFS mount).
    """
    nodes = _cluster_nodes()
    if nodes < 2 or os.environ.get("RAYLINE_SHARED_DISK") == "1":
        return
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not tracking or tracking.startswith(("sqlite:", "file:")) or "://" not in tracking:
        where = tracking or f"sqlite under {home()}"
        raise SpecError(
            f"RAY_ADDRESS joins a cluster of {nodes} nodes and the run registry ({where}) is on this machine",
            hint=f"set MLFLOW_TRACKING_URI to a tracking server every node reaches, {_SHARED_DISK_FIX}",
        )


def require_shared_storage() -> None:
    """On a cluster of several nodes, refuse Train/Tune storage on this machine's disk: workers on
    other nodes write their checkpoints there, into a folder of their own node."""
    nodes = _cluster_nodes()
    if nodes < 2 or os.environ.get("RAYLINE_SHARED_DISK") == "1":
        return
    storage = storage_path()
    if "://" not in storage:
        raise SpecError(
            f"RAY_ADDRESS joins a cluster of {nodes} nodes and the Train/Tune storage ({storage}) is a "
            "folder on this machine",
            hint=f"set RAYLINE_STORAGE to shared storage (s3://bucket/prefix, an NFS path), {_SHARED_DISK_FIX}",
        )


def cluster_address() -> str | None:
    return os.environ.get("RAY_ADDRESS") or None


JOIN_TIMEOUT_S = 10.0


def check_listening(address: str) -> None:
    """Fail in seconds when nothing listens at ``RAY_ADDRESS`` (``host:port`` or ``ray://host:port``):
    ``ray.init`` retries an unreachable GCS for minutes, silently. ``auto`` and other forms are
    left to Ray, which answers them at once."""
    import socket

    found = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address)
    if found is None:
        return
    host, port = found.group(1), int(found.group(2))
    try:
        socket.create_connection((host, port), timeout=JOIN_TIMEOUT_S).close()
    except OSError as err:
        reason = (
            f"no answer within {JOIN_TIMEOUT_S:g} s"
            if isinstance(err, TimeoutError)
            else (err.strerror or str(err)).lower()
        )
        raise RuntimeStartError(
            f"could not join the Ray cluster at RAY_ADDRESS={address}: {reason}",
            hint="check the address (the head's GCS port, 6379 by default, or ray://HEAD:10001), or unset RAY_ADDRESS",
        ) from None


def _object_store_bytes(total_memory: int) -> int:
    # Ray's default takes 30% of RAM; on a small box that competes with xgboost/torch for memory.
    # Keep it between 512 MiB and 4 GiB and within /dev/shm, where Ray puts the store.
    # RAYLINE_OBJECT_STORE_MB sets it (Ray's least is 75 MiB): a small store shows what streams.
    raw = os.environ.get("RAYLINE_OBJECT_STORE_MB")
    if raw:
        try:
            return max(75 * 1024**2, int(float(raw) * 1024**2))
        except ValueError:
            raise RuntimeStartError(f"RAYLINE_OBJECT_STORE_MB={raw!r} is not a number of MiB") from None
    want = int(total_memory * 0.2)
    try:
        stat = os.statvfs("/dev/shm")
        want = min(want, int(stat.f_bavail * stat.f_frsize * 0.8))
    except OSError:
        pass
    return max(512 * 1024**2, min(want, 4 * _GIB))


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 * _GIB


@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float


def local_cpus() -> int:
    """CPUs for an embedded Ray: ``RAYLINE_NUM_CPUS`` or the machine's count."""
    raw = os.environ.get("RAYLINE_NUM_CPUS")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise RuntimeStartError(f"RAYLINE_NUM_CPUS={raw!r} is not a whole number") from None
        if value < 1:
            raise RuntimeStartError(f"RAYLINE_NUM_CPUS={raw!r} must be at least 1")
        return value
    return os.cpu_count() or 1


# A Ray Train worker is handed its share of a split and holds it in memory when the share is at
# most this many MiB (``stages.contexts.split_for_workers``); larger shares stream through Ray
# Data each epoch.
SHARD_CACHE_MB = 1024


def shard_cache_bytes() -> float:
    """The largest shard a Ray Train worker keeps in memory: ``RAYLINE_SHARD_CACHE_MB`` (0: none)."""
    raw = os.environ.get("RAYLINE_SHARD_CACHE_MB")
    if not raw:
        return SHARD_CACHE_MB * 2**20
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeStartError(f"RAYLINE_SHARD_CACHE_MB={raw!r} is not a number of MiB") from None
    if not value >= 0:  # NaN too
        raise RuntimeStartError(f"RAYLINE_SHARD_CACHE_MB={raw!r} must be 0 or more")
    return value * 2**20


def local_gpus() -> float:
    """GPUs on this machine: the embedded Ray's count once it runs, else what CUDA reports."""
    import ray

    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    import torch

    return float(torch.cuda.device_count())


def require_gpus(needed: float, what: str) -> None:
    """Fail now when the embedded Ray cannot give ``needed`` GPUs: Ray would wait for them forever.

    A cluster (``RAY_ADDRESS``) is left to decide: its autoscaler may add GPU nodes on demand.
    """
    if needed <= 0 or cluster_address() is not None:
        return
    have = local_gpus()
    if have < needed:
        raise SpecError(
            f"{what} needs {needed:g} GPU(s), this machine has {have:g}",
            hint="turn it off, or set RAY_ADDRESS to a Ray cluster with GPUs",
        )


# Ray Train's controller takes one report from each worker each time it polls them (every 2 s by
# default), and a worker's next report waits until it has: with a report every few rounds,
# boosting ran 4x slower than xgboost alone (docs/benchmarks.md). Polling every 0.25 s costs the
# controller a few actor calls a second. A value the user set wins; Ray passes it on to the
# controller and its workers.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.25"


def init(*, quiet: bool | None = None, setup_hook: str | None = None) -> Resources:
    """Start (or join) Ray once per process and return the cluster's resources.

    ``quiet`` (default: unless ``RAYLINE_VERBOSE=1``) keeps worker logs out of the terminal.
    """
    import ray

    if quiet is None:
        quiet = os.environ.get("RAYLINE_VERBOSE") != "1"
    if quiet:
        _drop_raylet_notices()  # before Ray starts: its listener prints from the first moment

    if not ray.is_initialized():
        os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
        kwargs: dict[str, Any] = {
            # Quiet: Ray's start-up notices (token auth, progress bars off) are not the user's concern.
            "logging_level": logging.ERROR if quiet else logging.INFO,
            # Worker logs (Train/Data progress chatter) stay in Ray's log files unless asked for;
            # failures still surface as exceptions with their messages.
            "log_to_driver": not quiet,
            # Workers inherit the driver's environment; rayline's paths must stay absolute there.
            # A Tune trial starts Ray Train runs of its own: it needs the controller's poll too.
            "runtime_env": {
                "env_vars": _worker_env(
                    {
                        "RAYLINE_HOME": str(home()),
                        TRAIN_POLL_ENV: os.environ[TRAIN_POLL_ENV],
                        # A Tune trial on another node starts Ray Train runs that keep their
                        # checkpoints where the driver's do.
                        **({"RAYLINE_STORAGE": storage_path()} if os.environ.get("RAYLINE_STORAGE") else {}),
                    }
                )
            },
        }
        if setup_hook:
            kwargs["runtime_env"]["worker_process_setup_hook"] = setup_hook
        address = cluster_address()
        if address is None:
            kwargs.update(
                num_cpus=local_cpus(),
                object_store_memory=_object_store_bytes(_total_memory()),
                include_dashboard=os.environ.get("RAYLINE_DASHBOARD", "0") == "1",
            )
        else:
            check_listening(address)
            kwargs["address"] = address
            if quiet:
                _filter_native_stderr()
        # ray.init replaces the process's SIGTERM handler with Ray's own (it dumps a stack and
        # exits, skipping every cleanup); put back a Python handler the caller had set.
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(**kwargs)
        except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError...
            where = f"join the Ray cluster at RAY_ADDRESS={address}" if address else "start a local Ray"
            raise RuntimeStartError(f"could not {where}: {first_line(err)}") from err
        finally:
            if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, on_sigterm)
        require_shared_registry()
    if quiet:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        for name in ("ray.data", "ray.train", "ray.tune", "ray.serve"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # It warns that the progress bars just turned off are off.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        # A snapshot of free CPUs taken while a fresh Ray still registers them reads 0; rayline
        # sizes its actors to leave Ray Data a CPU, so this "will hang" warning is a false alarm.
        logging.getLogger("ray.data.dataset").addFilter(_NO_CPU_WARNING)  # added once: same instance
    res = ray.cluster_resources()
    return Resources(cpus=float(res.get("CPU", 0.0)), gpus=float(res.get("GPU", 0.0)))


def _worker_env(wanted: dict[str, str]) -> dict[str, str]:
    """``wanted`` less what a Ray job's own runtime env already sets (``rayline submit`` forwards
    RAYLINE_HOME, for one): Ray refuses to merge two runtime envs that name the same variable."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return wanted
    try:
        job_vars = json.loads(raw).get("runtime_env", {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return wanted
    return {k: v for k, v in wanted.items() if k not in job_vars}


_RAY_NOTICES = logging.getLogger("rayline.ray_notices")


def _drop_raylet_notices() -> None:
    """Keep the raylets' notices out of the terminal; they stay in Ray's own logs.

    The driver prints every message of the cluster's error channel ("N PYTHON worker processes
    have been started", "A worker died or was killed", actor restarts) whatever ``log_to_driver``
    says; on a cluster of small nodes they flood the terminal. Failures that matter still reach
    rayline as exceptions. They go to the ``rayline.ray_notices`` logger at DEBUG instead.
    """
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "rayline_filter", False):
        return

    def print_unless_raylet(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                _RAY_NOTICES.debug("%s", line)
            return
        original(data, ignore_prefix)

    print_unless_raylet.rayline_filter = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_unless_raylet


# Ray's C++ log prefix: "[2026-11-30 11:10:21,263 E 2712 2756] core_worker.cc:2465: ..."
_NATIVE_LOG_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] ")


def _filter_native_stderr() -> None:
    """Keep the C++ log lines of this driver's Ray core worker out of the terminal.

    A driver joining a cluster prints them on file descriptor 2 (an actor's constructor arguments
    in the object store, actor restarts); the same lines are in Ray's log files. Python's own
    ``sys.stderr`` keeps the terminal directly; only what is written to descriptor 2 from native
    code passes through this filter, line by line, on a thread.
    """
    if getattr(sys.stderr, "rayline_direct", False):
        return
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    direct = io.TextIOWrapper(
        io.FileIO(terminal, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    direct.rayline_direct = True  # type: ignore[attr-defined]
    sys.stderr = direct

    def forward() -> None:
        with io.FileIO(read_end, "r") as source:
            for line in io.BufferedReader(source):
                if _NATIVE_LOG_LINE.match(line):
                    _RAY_NOTICES.debug("%s", line.decode(errors="replace").rstrip())
                else:
                    os.write(terminal, line)

    threading.Thread(target=forward, name="rayline-native-stderr", daemon=True).start()


class _NoCpuWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


_NO_CPU_WARNING = _NoCpuWarning()


def data_reserve(total_cpus: float) -> float:
    """CPUs kept free for Ray Data's read/map tasks next to long-lived actors and Train workers.

    Actors hold their CPUs for their whole life; if they take every CPU, the tasks feeding them
    (1 CPU each by default) can never be scheduled and the pipeline hangs.
    """
    return 1.0 if total_cpus <= 16 else 2.0


def cpus_per_actor(total_cpus: float, requested: float, actors: int) -> float:
    """``requested`` CPUs per actor, shrunk (fractionally) so ``actors`` of them leave the reserve,
    and never more than the largest node has: an actor is placed on one node."""
    room = max(0.1, total_cpus - data_reserve(total_cpus))
    return round(max(0.05, min(requested, room / max(1, actors), largest_node_cpus() or float("inf"))), 3)


def largest_node_cpus() -> float | None:
    """CPUs of the largest alive node of the Ray this process is connected to (None: not connected).

    On a cluster of small nodes the total is no guide: 4 CPUs over 2 nodes cannot hold a
    3-CPU actor, and Ray would wait for one forever.
    """
    import ray

    if not ray.is_initialized():
        return None
    sizes = [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    return max(sizes, default=None)


def require_node_for(cpus: float, what: str) -> None:
    """Fail now, naming ``what``, when no node of the cluster has ``cpus`` CPUs: Ray would wait forever."""
    largest = largest_node_cpus()
    if largest is not None and cpus > largest:
        raise SpecError(
            f"{what} asks for {cpus:g} CPUs, and the largest Ray node has {largest:g}",
            hint="ask for fewer CPUs per worker or actor, or add larger nodes",
        )


def init_while(fn: Callable[[], T], *, setup_hook: str | None = None) -> T:
    """``init()`` while ``fn`` runs in a thread; returns ``fn``'s result (or raises its error).

    Starting Ray mostly waits on its processes, while opening the MLflow store (imports, schema
    check) is Python work: run together they cost seconds less per command than one after the other.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="rayline-overlap") as pool:
        pending = pool.submit(fn)
        try:
            init(setup_hook=setup_hook)
        finally:
            # Its error (an unknown run, say) is the one the user needs, not Ray's.
            result = pending.result()
    return result


def call_with_timeout(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run a blocking call with a deadline: a hang becomes a clear error, not a silent stall."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name=f"rayline-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        from rayline.errors import failure_type

        raise failure_type(what)(f"{what} did not finish within {timeout_s:.0f} s", hint="raise the spec's timeout_s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
