"""The base of every family's ``model:`` section of a spec.

Each family declares its own section (a subclass, in its ``spec.py`` beside the family), what
kind of data it learns from, and where its implementation lives. The spec reads these without
importing the family's heavy dependencies.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown fields are errors; assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Strict):
    """A family's section: ``family`` plus the family's own fields."""

    family: str
    data_kind: ClassVar[str] = "table"  # the data kind plug this family learns from
    implementation: ClassVar[str]  # "module:Class" of the family (imported on use)
    # Whether the model takes missing feature values (null/NaN) as such: services accept null
    # for it and refuse it otherwise (tree libraries learn a direction for missing values).
    handles_missing: ClassVar[bool] = False

    def task_hint(self) -> str:
        """binary / multiclass / regression, a library objective that implies one, or auto."""
        return "auto"

    def total_steps(self) -> int:
        """Rounds or epochs one training run goes through (progress and time estimates)."""
        return 0
