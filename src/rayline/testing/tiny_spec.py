"""The ``model:`` section of the tiny test family (see ``rayline.testing.tiny``)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from rayline.modelspec import ModelSpec

# For RAYLINE_FAMILIES: the environment reaches Ray's workers and the CLI's subprocesses too.
REGISTRATION = "tiny=rayline.testing.tiny_spec:TinyModelSpec"


class TinyModelSpec(ModelSpec):
    """Nearest class centroid (classification) or the mean label (regression); for tests."""

    family: Literal["tiny"]
    temperature: Annotated[float, Field(gt=0)] = Field(default=1.0, description="softmax temperature over distances")
    delay_s: Annotated[float, Field(ge=0, le=10)] = Field(
        default=0.0,
        description="seconds each prediction call of the trained model takes (a slow model for overload tests)",
    )

    data_kind: ClassVar[str] = "table"
    implementation: ClassVar[str] = "rayline.testing.tiny:TinyFamily"

    def total_steps(self) -> int:
        return 1
