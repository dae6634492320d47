"""For tests that run rayline in the test process: a module's own RAYLINE_HOME (``rayline_home`` is
per test), homes that start with a migrated MLflow store, and the CLI's entry point without an
interpreter start-up."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

STORE = "mlflow.db"  # rayline.registry.default_tracking_uri: RAYLINE_HOME/mlflow.db
# Rows a migrated store holds that name no experiment, run, model or path.
_SCHEMA_ROWS = {"alembic_version", "workspaces", "sqlite_sequence"}
_empty_store: Path | None = None


def prepare_store(folder: Path) -> Path:
    """A migrated MLflow store with nothing in it, made once in ``folder`` for :func:`new_home` to copy.

    A new SQLite store runs all of MLflow's schema migrations, seconds each time; a copy of this
    file is what that store would be. MLflow's "Default" experiment is deleted: its artifact
    location is the current folder of whoever created the store, so every copy gets its own when
    first opened, as a store made where the test runs would."""
    global _empty_store
    from rayline.registry import Registry

    environ = dict(os.environ)  # the client sets MLflow's variables, which the CLI processes would inherit
    try:
        registry = Registry(folder, tracking_uri=f"sqlite:///{folder / STORE}")
        registry.client.search_experiments()  # creates and migrates the store
        registry.client.search_registered_models()  # the model registry's tables, in the same file
    finally:
        os.environ.clear()
        os.environ.update(environ)
    with contextlib.closing(sqlite3.connect(folder / STORE)) as db, db:
        db.execute("DELETE FROM experiments WHERE experiment_id = 0")
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        filled = [t for t in tables if t not in _SCHEMA_ROWS and db.execute(f'SELECT 1 FROM "{t}"').fetchone()]
    assert filled == [], f"a new MLflow store is not empty (copies would share these rows): {filled}"
    _empty_store = folder / STORE
    return _empty_store


def new_home(home: Path) -> Path:
    """``home`` created with a copy of the store :func:`prepare_store` made (conftest's session does)."""
    assert _empty_store is not None, "prepare_store has not run (tests/conftest.py does, once a session)"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / STORE).exists():
        shutil.copyfile(_empty_store, home / STORE)
    return home


@contextlib.contextmanager
def own_home(root: Path) -> Iterator[Path]:
    """``root/home`` as RAYLINE_HOME (a migrated empty store in it), with no tracking server or
    cluster from the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYLINE_HOME", str(new_home(root / "home")))
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
