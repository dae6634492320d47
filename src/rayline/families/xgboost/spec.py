"""The ``model:`` section of an xgboost spec."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from rayline.modelspec import ModelSpec


class XGBoostModelSpec(ModelSpec):
    """XGBoost on tables; ``params`` go to xgboost unchanged (max_depth, eta, subsample, ...)."""

    family: Literal["xgboost"]
    objective: str = Field(
        default="auto",
        description="auto (from the label: binary / multiclass / regression) or an xgboost objective",
    )
    num_boost_round: Annotated[int, Field(gt=0)] = 100
    early_stopping_rounds: Annotated[int, Field(gt=0)] | None = 10
    params: dict[str, Any] = Field(default_factory=lambda: {"max_depth": 6, "eta": 0.3, "tree_method": "hist"})

    data_kind: ClassVar[str] = "table"
    handles_missing: ClassVar[bool] = True
    implementation: ClassVar[str] = "rayline.families.xgboost.family:XGBoostFamily"

    def task_hint(self) -> str:
        return self.objective

    def total_steps(self) -> int:
        return self.num_boost_round
