"""docs/spec.md is generated from the spec models and must match them."""

from __future__ import annotations

from pathlib import Path

from rayline.specdoc import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def test_reference_is_current() -> None:
    assert DOC.read_text() == reference(), "regenerate: python -m rayline.specdoc > docs/spec.md"


def test_reference_names_every_section_and_field() -> None:
    text = reference()
    for heading in (
        "`data`",
        "`data.image`",
        "`serve.autoscaling`",
        "`tune.space.<name>`",
        "`model (family: resnet18)`",
    ):
        assert f"## {heading}" in text
    assert "| `batch_wait_timeout_s` | float | `0.0` |" in text
    assert "| `name` | str | **required** |" in text
