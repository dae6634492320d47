"""Outputs are written whole or not at all, and never replace what rayline did not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayline.atomic import atomic_output
from rayline.errors import DataError

REPORT = ("*.html", "*.png", "*.json")


def write_report(target: Path) -> None:
    with atomic_output(target, own=REPORT) as tmp:
        tmp.mkdir()
        (tmp / "report.html").write_text("new")
        (tmp / "plot.png").write_bytes(b"png")


def test_a_folder_of_its_own_files_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "report"
    write_report(target)
    (target / "old.png").write_bytes(b"from an earlier report")
    write_report(target)
    assert sorted(p.name for p in target.iterdir()) == ["plot.png", "report.html"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temp or probe folder left


@pytest.mark.parametrize("stray", ["notes.txt", "sub/notes.txt"])
def test_a_folder_holding_other_files_is_refused_and_kept(tmp_path: Path, stray: str) -> None:
    target = tmp_path / "important"
    (target / stray).parent.mkdir(parents=True, exist_ok=True)
    (target / stray).write_text("the user's")
    with pytest.raises(DataError) as info:
        write_report(target)
    assert str(info.value) == (
        f"{target} already exists and holds {stray}, which rayline did not write"
        " (pick another output, or remove it first)"
    )
    assert (target / stray).read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important"]


def test_a_file_in_the_place_of_a_folder_output_is_refused(tmp_path: Path) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("the user's")
    with pytest.raises(DataError, match=r"keep\.txt already exists and is a file"):
        write_report(keep)
    assert keep.read_text() == "the user's"


def test_a_folder_that_takes_no_files_fails_before_any_work(tmp_path: Path) -> None:
    ran = []
    with pytest.raises(DataError, match=r"^cannot write in /proc: "), atomic_output("/proc/rayline-nope", own=REPORT):
        ran.append(True)
    assert not ran
