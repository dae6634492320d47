"""The course's five lessons as scripts (examples/lessons/), each run with --smoke on tiny data.

Each runs in a process of its own, as a student runs it, in a RAYLINE_HOME of its own. What the
scripts would otherwise each redo before their lesson starts is made once here: the 5,000 MNIST
PNGs (``_common.digits_folder`` exports them when ``RAYLINE_HOME/data/mnist`` is missing) and a
migrated MLflow store (tests/inprocess.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inprocess import new_home

pytestmark = pytest.mark.slow
LESSONS = Path(__file__).resolve().parents[2] / "examples" / "lessons"
EXPECT = {
    "lesson1_intro.py": ["train:", "tune: best config", "predict:", "serve: [{'label'", "handle: [{'label'"],
    "lesson2_train.py": ["metrics: {'epoch': 1", "checkpoint: Checkpoint"],
    "lesson3_tune.py": ["Ray Tune best:", "rayline tune best:"],
    "lesson4_data.py": ["accuracy:", "label  accuracy", "rows shuffled:", "parquet files to"],
    "lesson5_serve.py": ["by hand:", "rayline:", "by header:"],
}


def test_every_lesson_is_covered() -> None:
    assert sorted(p.name for p in LESSONS.glob("lesson*.py")) == sorted(EXPECT)


@pytest.fixture(scope="module")
def mnist_pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 5,000 digits as DIR/<label>/<n>.png, exported once for the module (the lessons only read them)."""
    from rayline.datasets import export_mnist_png

    return export_mnist_png(tmp_path_factory.mktemp("lessons-data") / "mnist")


@pytest.mark.parametrize("script", sorted(EXPECT))
def test_lesson_smoke(script: str, tmp_path: Path, mnist_pngs: Path) -> None:
    home = new_home(tmp_path / "home")
    (home / "data").mkdir()
    (home / "data" / "mnist").symlink_to(mnist_pngs, target_is_directory=True)
    env = {**os.environ, "RAYLINE_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    # Run from elsewhere: the scripts find their specs next to them.
    proc = subprocess.run(
        [sys.executable, str(LESSONS / script), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for needle in EXPECT[script]:
        assert needle in proc.stdout, proc.stdout
