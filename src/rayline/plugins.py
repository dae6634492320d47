"""The plug registry: model families and data kinds by name, as ``"module:Class"`` strings.

Nothing here imports a plug: a family or data kind is imported when it is first asked for, so
``import rayline`` stays light and torch loads only for the families that need it. Three sources,
later ones adding to earlier ones:

- the built-in tables below;
- the ``rayline.families`` and ``rayline.data_kinds`` entry-point groups of installed packages;
- ``RAYLINE_FAMILIES`` / ``RAYLINE_DATA_KINDS``: ``name=module:Class`` pairs separated by commas.
  The environment reaches Ray's worker processes, so a plug named there works on every engine
  (the tests register their tiny family this way).

A family entry points at its model-spec class; that class names the family implementation in
its ``implementation`` attribute. The spec module must stay light (pydantic and
``rayline.modelspec`` only): ``rayline.spec`` imports it while it loads.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from importlib.metadata import entry_points
from typing import Any

BUILTIN_FAMILIES = {
    "xgboost": "rayline.families.xgboost.spec:XGBoostModelSpec",
    "resnet18": "rayline.families.resnet.spec:ResNetModelSpec",
}
BUILTIN_DATA_KINDS = {
    "table": "rayline.data.tables:TableKind",
    "images": "rayline.data.images:ImageKind",
}


def _from_env(variable: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in os.environ.get(variable, "").split(","))):
        name, sep, target = pair.partition("=")
        if not sep or ":" not in target:
            raise ValueError(f"{variable}: expected name=module:Class pairs, got {pair!r}")
        found[name.strip()] = target.strip()
    return found


@cache
def _entry_points(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


def installed_families() -> dict[str, str]:
    """The built-in families and those installed packages declare (what the docs describe)."""
    return {**BUILTIN_FAMILIES, **_entry_points("rayline.families")}


def families() -> dict[str, str]:
    """Family name -> ``"module:ModelSpecClass"``: the installed ones and ``RAYLINE_FAMILIES``."""
    return {**installed_families(), **_from_env("RAYLINE_FAMILIES")}


def data_kinds() -> dict[str, str]:
    """Data kind name -> ``"module:Class"``."""
    return {**BUILTIN_DATA_KINDS, **_entry_points("rayline.data_kinds"), **_from_env("RAYLINE_DATA_KINDS")}


def load(target: str) -> Any:
    """The object a ``"module:Name"`` string names (imported now)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
