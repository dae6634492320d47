"""Model families by name (lerobot's policy factory, for rayline).

The names and where each family lives are in ``rayline.plugins`` (built-ins, entry points, the
``RAYLINE_FAMILIES`` variable); a family is imported the first time it is asked for, so torch
loads only for the families that use it.
"""

from __future__ import annotations

from functools import cache

from rayline import plugins
from rayline.errors import SpecError
from rayline.families.base import Explainer, Family, LoopContext, Predictor

__all__ = ["Explainer", "Family", "LoopContext", "Predictor", "get_family", "names"]


def names() -> list[str]:
    """Every registered family name."""
    return sorted(plugins.families())


@cache
def get_family(name: str) -> Family:
    """The family registered as ``name`` (``model.family`` in a spec)."""
    table = plugins.families()
    if name not in table:
        raise SpecError(f"model.family {name!r} is not a known family; expected one of {', '.join(sorted(table))}")
    spec_class = plugins.load(table[name])
    family: Family = plugins.load(spec_class.implementation)()
    return family
