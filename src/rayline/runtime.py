"""The only place Ray is started or joined, and where rayline's paths live.

Local (no ``RAY_ADDRESS``): an embedded Ray with explicit CPUs, a bounded object store, quiet
logs and no dashboard under tests. ``RAY_ADDRESS`` set: join that cluster with no local-only
arguments, since the cluster owns its resources.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayline.errors import RuntimeStartError

_GIB = 1024**3


def home() -> Path:
    """``RAYLINE_HOME`` (default ``./.rayline``), absolute, created on first use."""
    path = Path(os.environ.get("RAYLINE_HOME") or ".rayline").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
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


def cluster_address() -> str | None:
    return os.environ.get("RAY_ADDRESS") or None


def _object_store_bytes(total_memory: int) -> int:
    # Ray's default takes 30% of RAM; on a small box that competes with xgboost/torch for memory.
    # Keep it between 512 MiB and 4 GiB and within /dev/shm, where Ray puts the store.
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


def init(*, quiet: bool = True) -> Resources:
    """Start (or join) Ray once per process and return the cluster's resources."""
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "logging_level": logging.WARNING if quiet else logging.INFO,
            "log_to_driver": True,
            # Workers inherit the driver's environment; rayline's paths must stay absolute there.
            "runtime_env": {"env_vars": {"RAYLINE_HOME": str(home())}},
        }
        address = cluster_address()
        if address is None:
            kwargs.update(
                num_cpus=local_cpus(),
                object_store_memory=_object_store_bytes(_total_memory()),
                include_dashboard=os.environ.get("RAYLINE_DASHBOARD", "0") == "1",
            )
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError...
            where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray"
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeStartError(f"could not start {where}: {first}") from err
    res = ray.cluster_resources()
    return Resources(cpus=float(res.get("CPU", 0.0)), gpus=float(res.get("GPU", 0.0)))


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
