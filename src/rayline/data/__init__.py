"""Data kinds by name: each one a plug that owns reading, schema checks, the split, the
in-memory layout, batches for both engines and the decoding of a serving request.

Which kinds exist, and where each lives, is in ``rayline.plugins``; a family declares the kind
it learns from (``ModelSpec.data_kind``).
"""

from __future__ import annotations

from functools import cache

from rayline import plugins
from rayline.data.base import DataKind, Prepared, Target
from rayline.errors import SpecError

__all__ = ["DataKind", "Prepared", "Target", "get_kind"]


@cache
def get_kind(name: str) -> DataKind:
    """The data kind registered as ``name``."""
    table = plugins.data_kinds()
    if name not in table:
        raise SpecError(f"data kind {name!r} is not known; expected one of {', '.join(sorted(table))}")
    kind: DataKind = plugins.load(table[name])()
    return kind
