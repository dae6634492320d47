"""The contract between lifecycle stages and a model family: protocols only.

Stages (train, tune, predict, evaluate, serve) are written once against these protocols. A
family knows its training loop, how to save and load a checkpoint, and how to predict on a
batch; it declares the data kind it learns from (``ModelSpec.data_kind``), and that data kind
owns reading, splitting and decoding requests. A family never starts Ray, touches the registry
or parses a spec file.

The same ``train_loop`` runs in three places, each behind a ``LoopContext``: in the driver
process (small data, no Train start-up cost), in a Ray Tune trial, and in every Ray Train worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from rayline.spec import Spec


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

    def whole(self, split: Literal["train", "valid"]) -> pd.DataFrame:
        """All of a table split, whichever worker asks: for a metric that does not add up across
        workers' shares (AUC). A Ray Train worker whose split streams gets its own share."""

    def batches(
        self, split: Literal["train", "valid"], batch_size: int, *, shuffle: bool
    ) -> Iterator[dict[str, np.ndarray]]:
        """This worker's share of an image split as numpy batches (image families)."""

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        """Record progress; ``checkpoint`` is a folder the context takes over (copies or moves)."""

    def resume_from(self) -> Path | None:
        """The checkpoint to continue from (the latest of an interrupted or failed run), or None.

        A loop reads it before its first report: the model, its step and what it needs to keep
        its metric history continuous (reports after it go on from that step, not from 0). A
        final checkpoint (the run had finished but was not registered) is reported again as is.
        """


class Predictor(Protocol):
    """A loaded checkpoint that predicts on batches (batch inference and serving)."""

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Output columns for each input row (probability, predicted_label, ...)."""

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """One JSON-ready result per decoded request item (the data kind decodes requests)."""


@runtime_checkable
class Explainer(Protocol):
    """A predictor that can say why (optional: table families with tree models implement it).

    Contributions are in the model's margin (log-odds for binary, raw score for regression,
    the predicted class's margin for multiclass): for each row, ``bias`` plus the sum of the
    feature columns equals that margin (TreeSHAP: xgboost ``pred_contribs``, LightGBM
    ``pred_contrib``). Serving checks ``isinstance(predictor, Explainer)`` before offering it.
    """

    def explain(self, batch: pd.DataFrame) -> pd.DataFrame:
        """One row per input row: one column per model feature, plus ``bias`` and ``margin``."""

    def explain_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """One JSON-ready explanation per decoded request item:
        ``{"contributions": {feature: float}, "bias": float, "margin": float}``."""


class Family(Protocol):
    name: str
    data_kind: str  # the data kind plug it learns from ("table", "images")
    predict_batch_size: int
    step_key: str  # what one step of the loop is called in reports: "round", "epoch"

    def reports(self, spec: Spec) -> int:
        """How many times one run of the loop reports (ASHA's time budget)."""

    def train_loop(self, config: Mapping[str, Any], ctx: LoopContext) -> None:
        """Train, calling ``ctx.report`` every few rounds/epochs and once at the end with a checkpoint.

        Checkpoints every ``train.report_every`` steps, and continues from ``ctx.resume_from()``.
        """

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        """The Ray Train trainer for this family (XGBoostTrainer, TorchTrainer, ...) around ``train_loop``."""

    def load(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> Predictor: ...

    def tunable(self, spec: Spec) -> set[str]:
        """Names a tune search space may use for this family ("*": any)."""

    def with_trial(self, spec: Spec, trial: Mapping[str, Any]) -> Spec:
        """The spec with one trial's sampled values applied."""

    def importance(self, checkpoint: Path) -> dict[str, float]:
        """Feature importance of a checkpoint, for the report (empty when the family has none)."""
