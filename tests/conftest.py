"""Shared fixtures: an isolated RAYLINE_HOME per test and one local Ray for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from inprocess import new_home, prepare_store

# The tiny test family (rayline.testing) is registered for this process, the CLI processes the
# tests start and Ray's workers, which all inherit the environment. Before rayline is imported:
# the spec reads the registry once.
os.environ["RAYLINE_FAMILIES"] = "tiny=rayline.testing.tiny_spec:TinyModelSpec"

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``-m "not ray"`` selects the tests that start no Ray: each that uses ``ray_session`` is marked."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated, empty MLflow store for the session, which every RAYLINE_HOME starts with a copy of."""
    return prepare_store(tmp_path_factory.mktemp("empty-store"))


@pytest.fixture(autouse=True)
def rayline_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Path:
    """Every test gets a RAYLINE_HOME with no runs (its MLflow store migrated already) and no
    cluster or MLflow server from the environment. Not inside ``tmp_path``: a test that checks
    what a command left there sees only what the command wrote."""
    home = new_home(tmp_path_factory.mktemp("home"))
    monkeypatch.setenv("RAYLINE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return home


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One embedded Ray for every test that needs it (starting Ray costs seconds)."""
    os.environ.setdefault("RAYLINE_NUM_CPUS", "2")
    os.environ.pop("RAY_ADDRESS", None)
    from rayline import runtime

    resources = runtime.init()
    yield resources
    runtime.shutdown()


@pytest.fixture
def no_checkpoint_copies_left() -> Iterator[None]:
    """Fails the test if it left Ray Train checkpoint copies (``checkpoint_tmp_*``) in the temp folder."""
    import tempfile

    folder = Path(tempfile.gettempdir())
    before = set(folder.glob("checkpoint_tmp_*"))
    yield
    left = sorted(p.name for p in set(folder.glob("checkpoint_tmp_*")) - before)
    assert left == [], f"checkpoint copies left in {folder}: {left}"
