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


def test_tasks_run_and_see_home(ray_session: runtime.Resources, rayline_home: Path) -> None:
    import ray

    @ray.remote(num_cpus=0.5)
    def square(x: int) -> int:
        return x * x

    assert ray.get([square.remote(i) for i in range(4)], timeout=60) == [0, 1, 4, 9]


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
