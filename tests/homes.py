"""A RAYLINE_HOME of a module's own, for fixtures wider than one test (``rayline_home`` is per test)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def own_home(root: Path) -> Iterator[Path]:
    """``root/home`` as RAYLINE_HOME, with no tracking server or cluster from the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYLINE_HOME", str(root / "home"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("RAY_ADDRESS", raising=False)
        yield root / "home"
