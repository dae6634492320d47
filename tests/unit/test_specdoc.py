"""docs/spec.md is generated from the spec models and must match them."""

from __future__ import annotations

from pathlib import Path

from rayline.plugins import installed_families
from rayline.specdoc import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def test_reference_is_current() -> None:
    # The installed families only: the tests register a tiny family of their own.
    assert DOC.read_text() == reference(installed_families()), "regenerate: python -m rayline.specdoc > docs/spec.md"


def test_every_registered_family_is_documented() -> None:
    assert "## `model (family: tiny, learns from table)`" in reference()


def test_reference_names_every_section_and_field() -> None:
    text = reference()
    for heading in (
        "`data`",
        "`data.image`",
        "`serve.autoscaling`",
        "`tune.space.<name>`",
        "`model (family: resnet18, learns from images)`",
        "`model (family: lightgbm, learns from table)`",
    ):
        assert f"## {heading}" in text
    assert "| `batch_wait_timeout_s` | float | `0.0` |" in text
    assert "| `name` | str | **required** |" in text
