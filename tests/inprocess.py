"""For tests that run rayline in the test process: a module's own RAYLINE_HOME (``rayline_home`` is
per test) and the CLI's entry point without an interpreter start-up."""

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


def rayline_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``rayline ARGS`` through the CLI's entry point in this process: exit code, stdout, stderr."""
    from rayline.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
