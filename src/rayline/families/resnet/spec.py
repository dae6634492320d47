"""The ``model:`` section of a resnet18 spec."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from rayline.modelspec import ModelSpec


class ResNetModelSpec(ModelSpec):
    """torchvision ResNet18 with the first conv matched to the image channels."""

    family: Literal["resnet18"]
    epochs: Annotated[int, Field(gt=0)] = 2
    batch_size: Annotated[int, Field(gt=0)] = 64
    lr: Annotated[float, Field(gt=0)] = 1e-3

    data_kind: ClassVar[str] = "images"
    implementation: ClassVar[str] = "rayline.families.resnet.family:ResNetFamily"

    def task_hint(self) -> str:
        return "multiclass"

    def total_steps(self) -> int:
        return self.epochs
