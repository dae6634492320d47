"""Shared fixtures: an isolated RAYLINE_HOME per test and one local Ray for the session."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inprocess import new_home, prepare_store

# The tiny test family (rayline.testing) is registered for this process, the CLI processes the
# tests start and Ray's workers, which all inherit the environment. Before rayline is imported:
# the spec reads the registry once.
os.environ["RAYLINE_FAMILIES"] = "tiny=rayline.testing.tiny_spec:TinyModelSpec"

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Under pytest-xdist's ``--dist loadfile`` (``make test``), a file's tests run in one worker,
    which sets up its module fixtures (a service, a trained run) once; the cluster tests run in one
    worker too, one cluster at a time (several on a 2-core machine would starve each other)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class OneWorkerForTheClusters(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "tests/cluster" if nodeid.startswith("tests/cluster/") else super()._split_scope(nodeid)

    return OneWorkerForTheClusters(config, log)


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
    _shutdown_with_deadline(runtime.shutdown)


def _shutdown_with_deadline(shutdown: Callable[[], None], deadline_s: float = 60) -> None:
    """``ray.shutdown()``, or, should it still wait after ``deadline_s``, the end of the Ray
    processes this session started, which returns it.

    Ray's shutdown can block for ever in a gRPC call without a deadline to its GCS while closing
    the error subscriber (seen at the end of a suite run; ray-project/ray#44836): a whole CI run
    would wait on it."""
    stopping = threading.Thread(target=shutdown, name="ray-shutdown", daemon=True)
    stopping.start()
    stopping.join(deadline_s)
    if not stopping.is_alive():
        return
    for pid in _children(os.getpid()):  # a local Ray's GCS, raylet and monitors are this process's children
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # ended meanwhile
            os.kill(pid, signal.SIGKILL)
    stopping.join(30)


def _children(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # ended meanwhile
            # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
    return pids


@pytest.fixture
def no_checkpoint_copies_left() -> Iterator[None]:
    """Fails the test if it left Ray Train checkpoint copies (``checkpoint_tmp_*``) in the temp folder."""
    import tempfile

    folder = Path(tempfile.gettempdir())
    before = set(folder.glob("checkpoint_tmp_*"))
    yield
    left = sorted(p.name for p in set(folder.glob("checkpoint_tmp_*")) - before)
    assert left == [], f"checkpoint copies left in {folder}: {left}"
