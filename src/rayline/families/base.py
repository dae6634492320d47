"""The contract between lifecycle stages and a model family.

Stages (train, tune, predict, serve) are written once against these protocols. A family knows
its training loop, how to save and load a checkpoint, how to predict on a batch, and the shape
of one request record. It never starts Ray, touches the registry or parses a spec file.

The same ``train_loop`` runs in three places, each behind a ``LoopContext``: in the driver
process (small data, no Train start-up cost), in a Ray Tune trial, and in every Ray Train worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from pydantic import BaseModel

    from rayline.spec import Spec

DataKind = Literal["table", "images"]


class LoopContext(Protocol):
    """Where a training loop runs: its data, its threads, and where it reports."""

    @property
    def cpus(self) -> int:
        """Threads this worker may use (xgboost ``nthread``, torch intra-op threads)."""

    @property
    def rank(self) -> int:
        """0 on the worker that writes checkpoints."""

    @property
    def world_size(self) -> int: ...

    def frame(self, split: Literal["train", "valid"]) -> pd.DataFrame:
        """This worker's share of a table split (table families)."""

    def batches(
        self, split: Literal["train", "valid"], batch_size: int, *, shuffle: bool
    ) -> Iterator[dict[str, np.ndarray]]:
        """This worker's share of an image split as numpy batches (image families)."""

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        """Record progress; ``checkpoint`` is a folder the context takes over (copies or moves)."""


class Predictor(Protocol):
    """A loaded checkpoint that predicts on batches (batch inference and serving)."""

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Output columns for each input row (probability, predicted_label, ...)."""

    def request_model(self) -> type[BaseModel]:
        """The pydantic body of ``POST /predict`` (shown in /docs with the real fields)."""

    def request_items(self, body: Any) -> list[Any]:
        """One item per record/image of a validated body; items from many requests batch together."""

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """One JSON-ready result per item."""


class Family(Protocol):
    name: str
    data_kind: DataKind
    predict_batch_size: int
    step_key: str  # what one step of the loop is called in reports: "round", "epoch"

    def reports(self, spec: Spec) -> int:
        """How many times one run of the loop reports (ASHA's time budget)."""

    def train_loop(self, config: Mapping[str, Any], ctx: LoopContext) -> None:
        """Train, calling ``ctx.report`` every few rounds/epochs and once at the end with a checkpoint."""

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        """The Ray Train trainer for this family (XGBoostTrainer, TorchTrainer) around ``train_loop``."""

    def load(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> Predictor: ...

    def tunable(self, spec: Spec) -> set[str]:
        """Names a tune search space may use for this family."""

    def with_trial(self, spec: Spec, trial: Mapping[str, Any]) -> Spec:
        """The spec with one trial's sampled values applied."""


def get_family(name: str) -> Family:
    """The family module for ``model.family`` (imported on use: torch loads only for resnet)."""
    if name == "xgboost":
        from rayline.families.xgboost import XGBoostFamily

        return XGBoostFamily()
    if name == "resnet18":
        from rayline.families.resnet import ResNetFamily  # type: ignore[import-not-found]

        family: Family = ResNetFamily()
        return family
    from rayline.errors import SpecError

    raise SpecError(f"model.family {name!r} is not a known family")
