"""Loading a checkpoint never runs code: a model file replaced by a pickle that would run code is
refused by every family, and the code does not run."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

import imagesets
import rayline
import tablesets
from rayline.families import get_family
from rayline.registry import open_registry


class _Planted:
    """Unpickling this touches ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _trained(family: str, tmp_path: Path) -> Path:
    if family == "resnet18":
        source = imagesets.digits(tmp_path / "digits", per_class=8, classes=[0, 1])
        spec = imagesets.spec_for(source, name="safety-img")
    else:
        source = tablesets.make_table("binary", tmp_path, rows=200)
        raw = tablesets.spec_dict("binary", source, name=f"safety-{family}")
        if family == "lightgbm":
            raw["model"] = {"family": "lightgbm", "num_boost_round": 5}
        spec = rayline.spec_from_dict(raw)
    run = rayline.train(spec)
    return open_registry().checkpoint_dir(run.run_id)


@pytest.mark.parametrize("family", ["xgboost", "lightgbm", "resnet18"])
def test_a_pickled_code_checkpoint_is_refused(family: str, tmp_path: Path) -> None:
    good = _trained(family, tmp_path)
    planted = tmp_path / "planted"
    shutil.copytree(good, planted)
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Planted(marker))
    models = [p for p in planted.rglob("*") if p.is_file() and p.name != "meta.json"]
    assert models
    for path in models:
        path.write_bytes(payload)
    get_family(family).load(good)  # the real checkpoint loads
    with pytest.raises(Exception):  # noqa: B017 (each library refuses in its own words)
        get_family(family).load(planted)
    assert not marker.exists(), f"loading a {family} checkpoint ran pickled code"
