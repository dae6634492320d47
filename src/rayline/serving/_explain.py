"""``POST /explain``: why the model answered as it did, one explanation per input.

The body is ``/predict``'s (same schema, same model multiplexing); the answer is
``{"model": run_id, "explanations": [...]}``. What an explanation holds depends on the model:

- a table model whose predictor is an ``Explainer`` (xgboost, LightGBM): TreeSHAP
  contributions per feature, the bias and the margin they add up to, and the prediction;
- an image model whose predictor has ``saliency_items`` (ResNet18): a saliency map of the input's
  size (the predicted class's score's gradient, per pixel, scaled to 0..1), and the prediction.

A model with neither (the tiny test family, or a plug-in family without the hooks) answers 400
``{"error": "model run X (family) has no explanations"}``: the route is always offered, since
a request may name another registered run than the served one, and whether that run can
explain is known only once it is loaded.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from rayline.errors import ExplainError
from rayline.families import Explainer
from rayline.serving._models import Served

PATH = "/explain"


@runtime_checkable
class Salient(Protocol):
    """A predictor of images that can show which pixels its answer rests on (optional)."""

    def saliency_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """One ``{"saliency": [[float]] (H x W, 0..1), "label", ...}`` per decoded image."""


class NotExplainable(ExplainError):
    """The model that would answer has no explanations (a 400: asking again will not help)."""


def can_explain(predictor: Any) -> bool:
    return isinstance(predictor, Explainer | Salient)


def explain_checked(predictor: Any, items: list[Any], *, run_id: str, family: str) -> list[dict[str, Any]]:
    """The predictor's explanation of each item, checked to be one per input (as predictions are)."""
    if isinstance(predictor, Explainer):
        results = predictor.explain_items(items)
    elif isinstance(predictor, Salient):
        results = predictor.saliency_items(items)
    else:
        raise NotExplainable(f"model run {run_id} ({family}) has no explanations")
    if len(results) != len(items):
        raise RuntimeError(f"the predictor returned {len(results)} explanations for {len(items)} inputs")
    return results


async def explain_run(served: Served, predictor: Any, items: list[Any], run_id: str) -> list[dict[str, Any]]:
    """``explain_checked`` for ``run_id``'s predictor, in a thread: TreeSHAP on a big body, or a
    saliency map's backward pass, takes longer than the event loop should stand still."""
    family = str((await served.meta_of(run_id)).get("family", served.family.name))
    return await asyncio.to_thread(explain_checked, predictor, items, run_id=run_id, family=family)


# ------------------------------------------------------------------------ the documented answer
class Contributions(BaseModel):
    """A table record: TreeSHAP contributions, and the prediction (``/predict``'s fields)."""

    model_config = ConfigDict(extra="allow")

    contributions: dict[str, float] = Field(
        description="per model feature: how much it moved the margin from the bias (signed)"
    )
    bias: float = Field(description="the margin of a record the model knows nothing about (the expected margin)")
    margin: float = Field(
        description="bias + the contributions: log-odds (binary), the prediction (regression), "
        "or the predicted class's margin (multiclass)"
    )


class Saliency(BaseModel):
    """An image: how much each pixel sways the predicted class's score, and the prediction."""

    model_config = ConfigDict(extra="allow")

    saliency: list[list[float]] = Field(description="height x width, 0..1 (1: the most telling pixel)")


class ExplainResponse(BaseModel):
    model: str = Field(description="the run that answered")
    explanations: list[Contributions | Saliency] = Field(description="one per input, in order")
