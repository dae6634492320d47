"""The runtime against a real embedded Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rayline import runtime
from rayline.errors import RuntimeStartError


def test_local_ray_has_explicit_cpus(ray_session: runtime.Resources) -> None:
    import ray

    assert ray.is_initialized()
    assert ray_session.cpus == float(os.environ["RAYLINE_NUM_CPUS"])
    # init() is idempotent: a second call joins the running instance
    assert runtime.init() == ray_session


def test_workers_get_rayline_environment(ray_session: runtime.Resources) -> None:
    """A Ray worker sees what rayline set for it at start: an absolute RAYLINE_HOME, Ray Train's
    poll interval, and the families the driver registered (RAYLINE_FAMILIES: tiny, here)."""
    import ray

    @ray.remote(num_cpus=0.5)
    def seen() -> tuple[str, str | None, list[str]]:
        from rayline.families import names

        return os.environ["RAYLINE_HOME"], os.environ.get(runtime.TRAIN_POLL_ENV), names()

    home, poll, families = ray.get(seen.remote(), timeout=60)
    assert Path(home).is_absolute()
    assert poll == os.environ[runtime.TRAIN_POLL_ENV]
    assert {"tiny", "xgboost", "lightgbm"} <= set(families)


def test_storage_path_is_absolute(rayline_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = Path(runtime.storage_path())
    assert path.is_absolute() and path.is_dir() and path.parent == rayline_home.resolve()
    monkeypatch.setenv("RAYLINE_STORAGE", "relative/dir")
    assert Path(runtime.storage_path()).is_absolute()
    monkeypatch.setenv("RAYLINE_STORAGE", "s3://bucket/prefix")
    assert runtime.storage_path() == "s3://bucket/prefix"


def test_bad_cpu_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLINE_NUM_CPUS", "lots")
    with pytest.raises(RuntimeStartError, match="RAYLINE_NUM_CPUS='lots'"):
        runtime.local_cpus()


def test_object_store_is_bounded() -> None:
    gib = 1024**3
    assert runtime._object_store_bytes(2 * gib) == 512 * 1024**2
    assert runtime._object_store_bytes(64 * gib) == 4 * gib
