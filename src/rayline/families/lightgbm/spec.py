"""The ``model:`` section of a lightgbm spec."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from rayline.modelspec import ModelSpec

# LightGBM objective names (aliases included) by the task they imply. Ranking objectives are not
# here: they need query groups, which a table of independent rows does not have.
REGRESSION_OBJECTIVES = frozenset(
    {
        "regression",
        "regression_l2",
        "l2",
        "mean_squared_error",
        "mse",
        "l2_root",
        "root_mean_squared_error",
        "rmse",
        "regression_l1",
        "l1",
        "mean_absolute_error",
        "mae",
        "huber",
        "fair",
        "poisson",
        "quantile",
        "mape",
        "mean_absolute_percentage_error",
        "gamma",
        "tweedie",
    }
)
BINARY_OBJECTIVES = frozenset({"binary", "cross_entropy", "xentropy", "cross_entropy_lambda", "xentlambda"})
MULTICLASS_OBJECTIVES = frozenset({"multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr"})
_RANKING = frozenset({"lambdarank", "rank_xendcg", "xendcg", "xe_ndcg", "xe_ndcg_mart", "xendcg_mart"})


def objective_task(objective: str) -> Literal["binary", "multiclass", "regression", "auto"]:
    """The task a lightgbm objective implies ("auto" for auto)."""
    if objective in REGRESSION_OBJECTIVES:
        return "regression"
    if objective in BINARY_OBJECTIVES:
        return "binary"
    if objective in MULTICLASS_OBJECTIVES:
        return "multiclass"
    return "auto"


class LightGBMModelSpec(ModelSpec):
    """LightGBM on tables; ``params`` go to lightgbm unchanged (num_leaves, learning_rate, ...).

    Columns in ``data.categorical`` are split on as categories by LightGBM itself (no one-hot
    encoding). ``scaling.use_gpu`` sets ``device_type: gpu``, which needs a lightgbm built with
    GPU support (the wheels on PyPI are CPU-only); set ``params.device_type`` to override it.
    """

    family: Literal["lightgbm"]
    objective: str = Field(
        default="auto",
        description="auto (from the label: binary / multiclass / regression) or a lightgbm objective: "
        "binary, multiclass, multiclassova, regression, regression_l1, huber, poisson, quantile, ...",
    )
    num_boost_round: Annotated[int, Field(gt=0)] = Field(default=100, description="boosting rounds at most")
    early_stopping_rounds: Annotated[int, Field(gt=0)] | None = Field(
        default=10,
        description="stop when the validation loss has not improved for this many rounds and keep the "
        "best round's trees; null trains every round",
    )
    params: dict[str, Any] = Field(
        default_factory=lambda: {"num_leaves": 31, "learning_rate": 0.1},
        description="lightgbm parameters (num_leaves, learning_rate, min_data_in_leaf, feature_fraction, ...); "
        "objective, metric and num_threads are set by rayline",
    )

    data_kind: ClassVar[str] = "table"
    handles_missing: ClassVar[bool] = True
    implementation: ClassVar[str] = "rayline.families.lightgbm.family:LightGBMFamily"

    @field_validator("objective")
    @classmethod
    def _objective(cls, value: str) -> str:
        name = value.strip().lower()  # lightgbm reads objective names case-insensitively
        if name == "auto" or objective_task(name) != "auto":
            return name
        if name in _RANKING:
            raise ValueError(f"ranking objective {value!r} needs query groups, which rayline does not pass")
        known = ", ".join(sorted(REGRESSION_OBJECTIVES | BINARY_OBJECTIVES | MULTICLASS_OBJECTIVES))
        raise ValueError(f"unknown lightgbm objective {value!r}; expected auto or one of {known}")

    def task_hint(self) -> str:
        # In the words rayline.data.table_schema.infer_task reads: regression / binary / multiclass.
        return objective_task(self.objective)

    def total_steps(self) -> int:
        return self.num_boost_round
