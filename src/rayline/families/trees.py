"""What the boosted-tree families (xgboost, LightGBM) share: the family, its predictor and the
frame of its training loop. Each supplies only what its library does differently.

A tree family (``TreeFamily``) gives its model section's class, its predictor class, its Ray
Train trainer, its feature importance, how to read a booster to resume from (``resume``) and the
native boosting loop (``boost``). The loop is given a ``TreeRun``: the spec, the layout, where a
resumed run goes on from, and the steps every tree loop takes (a sparse report with a checkpoint
every ``train.report_every`` rounds, the validation curves kept across a resume, the final
report of the best round).

A tree predictor (``TreePredictor``) gives how to load its booster, the raw prediction for a
model input and the TreeSHAP contributions; the predictions and explanations of frames and of
request records (``rayline.families.base.Explainer``) are written here once.

Metric names are xgboost's for both families (``metric_entries``), so a spec's ``metric:``
means the same for both.
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeAlias, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from rayline.checkpoints import checked_meta
from rayline.data.table_batches import arrow_matrix, arrow_outputs
from rayline.data.table_schema import TableLayout
from rayline.data.tables import features_frame, output_frame, output_records, record_matrix, records_frame
from rayline.errors import RaylineError, map_error
from rayline.families.base import LoopContext
from rayline.families.loop_checkpoints import finished, report_again, report_checkpoint, resume_point
from rayline.families.treeshap import explanation_frame, explanation_records, predicted_class
from rayline.spec import Spec

Curves = dict[str, list[float]]  # native validation metric -> its value after each round, from round 1
ModelInput: TypeAlias = pd.DataFrame | np.ndarray  # typed columns (a categorical feature), else the float32 matrix


class BoostedSpec(Protocol):
    """What a tree family's model section has in common (``rayline.modelspec.ModelSpec``s)."""

    num_boost_round: int
    early_stopping_rounds: int | None
    params: dict[str, Any]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self: ...


M = TypeVar("M", bound=BoostedSpec)
_TOP_LEVEL_TUNABLE = {"num_boost_round", "early_stopping_rounds"}


def metric_entries(name: str, value: float, prefix: str = "valid_") -> dict[str, float]:
    """An xgboost metric name and value -> rayline's: ``valid_<metric>``, and ``valid_loss`` /
    ``valid_accuracy`` where it is one.

    ``valid_loss`` repeats the log loss / RMSE on purpose: a spec's ``metric: valid_loss`` then
    means the same for every family (the report draws the pair as one curve).
    """
    out = {f"{prefix}{name}": value}
    if name in ("logloss", "mlogloss", "rmse"):
        out[f"{prefix}loss"] = value
    if name in ("error", "merror"):
        out[f"{prefix}accuracy"] = 1.0 - value
    return out


def joined(before: Curves, after: Mapping[str, Any]) -> Curves:
    """The curves of the rounds before a resume, then those since."""
    return {name: [*before.get(name, []), *(float(v) for v in values)] for name, values in after.items()}


# ------------------------------------------------------------------------------ training
@dataclass
class TreeRun(Generic[M]):
    """One run of a tree family's loop: what it trains on and the reports every tree loop makes.

    ``booster`` and ``start``: the booster a resumed run goes on from and the rounds it has
    (None and 0 for a fresh start); ``before``: its validation curves. A checkpoint carries the
    curves so far (``meta["curves"]``), so a resumed run keeps one history.
    """

    family: str
    spec: Spec
    model: M
    layout: TableLayout
    ctx: LoopContext
    rename: Callable[..., dict[str, float]]  # (native metric, value, prefix="valid_") -> rayline's metrics
    booster: Any = None
    start: int = 0
    before: Curves = field(default_factory=dict)
    objective: str = ""  # set by the loop once its parameters are known (it is in meta.json)
    boost_s: float = 0.0  # the time ``boosting`` took: the rounds since the start (or the resume)

    @property
    def meta(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "data_kind": "table",
            "layout": self.layout.to_dict(),
            "objective": self.objective,
        }

    def due(self, done: int) -> bool:
        """Whether the loop reports after ``done`` rounds (sparse: a report is a synchronisation
        point, docs/benchmarks.md; the final report comes after the last round)."""
        return done % self.spec.train.report_every == 0 and done < self.model.num_boost_round

    @contextlib.contextmanager
    def boosting(
        self, error: type[BaseException], refused: Callable[[BaseException], RaylineError | None]
    ) -> Iterator[None]:
        """Around the library's training call: timed (``boost_s``), and its ``error`` as
        ``refused`` words it (a value of ``model.params``) or as a failure of training."""
        start = time.perf_counter()
        try:
            yield
        except error as err:
            raise refused(err) or map_error(err, during="training") from None
        self.boost_s = time.perf_counter() - start

    def curves(self, valid: Mapping[str, Any]) -> Curves:
        """The whole run's validation curves; ``valid``: the native history since this process started."""
        return joined(self.before, valid)

    def checkpoint(self, metrics: Mapping[str, float], valid: Mapping[str, Any], write: Callable[[Path], Any]) -> None:
        """A report of ``metrics`` with the checkpoint ``write`` writes; ``valid``: the native
        validation history since the start of this process's training."""
        report_checkpoint(self.ctx, metrics, {**self.meta, "curves": self.curves(valid)}, write)

    def final(self, curves: Curves, best: int, rounds: int) -> dict[str, float]:
        """The final metrics: the best round's (1-based ``best``) of every curve, the rounds run."""
        out: dict[str, float] = {"round": float(best), "rounds_run": float(rounds), "time_boost_s": self.boost_s}
        if self.start:
            out["resumed_from_round"] = float(self.start)  # time_boost_s counts the rounds since
        for name, values in curves.items():
            out.update(self.rename(name, values[best - 1]))
        return out

    def finish(self, final: Mapping[str, float], write: Callable[[Path], Any]) -> None:
        """The final report, with the checkpoint of the best round on rank 0."""
        report_checkpoint(self.ctx, final, self.meta, write)


class TreeFamily(ABC, Generic[M]):
    """A boosted-tree family on tables (``rayline.families.base.Family``)."""

    name: ClassVar[str]
    data_kind = "table"
    predict_batch_size = 4096
    step_key = "round"
    spec_class: type[M]
    predictor: type[TreePredictor]

    @abstractmethod
    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        """The Ray Train trainer around ``train_loop``."""

    @abstractmethod
    def importance(self, checkpoint: Path) -> dict[str, float]:
        """Gain per feature, by the layout's names."""

    @abstractmethod
    def resume(self, folder: Path) -> tuple[Any, int]:
        """The booster of the checkpoint in ``folder`` and the rounds it has."""

    @abstractmethod
    def boost(self, run: TreeRun[M]) -> None:
        """The native loop: boost, report through ``run.checkpoint`` when ``run.due``, and end
        with ``run.finish``."""

    def model_section(self, spec: Spec) -> M:
        """``spec.model``, typed: the spec's model union is built at run time, so a type checker cannot narrow it."""
        model: object = spec.model
        if not isinstance(model, self.spec_class):
            raise TypeError(f"expected a {self.name} model section, got {type(model).__name__}")
        return model

    def train_loop(self, config: Mapping[str, Any], ctx: LoopContext) -> None:
        """The loop shared by the in-process, Tune-trial and Ray Train paths."""
        spec = Spec.model_validate(config["spec"])
        point = resume_point(ctx)
        if point is not None and finished(point[1], "rounds_run"):
            report_again(ctx, *point)  # its booster is cut at the best round: nothing to train on
            return
        layout = TableLayout.from_dict(config["layout"])
        run = TreeRun(self.name, spec, self.model_section(spec), layout, ctx, self.rename)
        if point is not None:
            run.booster, run.start = self.resume(point[0])
            run.before = point[1].get("curves", {})
        self.boost(run)

    def rename(self, name: str, value: float, prefix: str = "valid_") -> dict[str, float]:
        """A native metric -> rayline's metrics (``metric_entries``)."""
        return metric_entries(name, value, prefix)

    def reports(self, spec: Spec) -> int:
        return max(1, math.ceil(self.model_section(spec).num_boost_round / spec.train.report_every))

    def load(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> TreePredictor:
        return self.predictor(checkpoint, cpus=cpus)  # trees have no reduced-precision mode here

    def tunable(self, spec: Spec) -> set[str]:
        # Any parameter of the library may be searched; the top-level loop settings too.
        return {"*"}

    def with_trial(self, spec: Spec, trial: Mapping[str, Any]) -> Spec:
        model = self.model_section(spec)
        top = {k: v for k, v in trial.items() if k in _TOP_LEVEL_TUNABLE}
        params = {**model.params, **{k: v for k, v in trial.items() if k not in _TOP_LEVEL_TUNABLE}}
        new_model = model.model_copy(update={**top, "params": params})
        return spec.model_copy(update={"model": new_model})


# ----------------------------------------------------------------------------- predicting
class TreePredictor(ABC):
    """A booster and its table layout; ``predict`` maps feature rows to output columns, ``explain``
    says why (an ``Explainer``: TreeSHAP contributions)."""

    family: ClassVar[str]
    model_file: ClassVar[str]

    def __init__(self, checkpoint: Path, *, cpus: int = 1) -> None:
        self.meta = checked_meta(checkpoint, self.model_file, self.family)
        self.layout = TableLayout.from_dict(self.meta["layout"])
        self.cpus = max(1, cpus)
        self.booster = self._load(checkpoint / self.model_file)

    @abstractmethod
    def _load(self, path: Path) -> Any:
        """The booster in ``path``, set to use ``self.cpus`` threads."""

    @abstractmethod
    def _raw(self, data: Any) -> np.ndarray:
        """The model's raw predictions (probabilities, values) for a model input: a
        ``ModelInput`` or what ``_native`` made of one."""

    @abstractmethod
    def _contributions(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature contributions (bias last: [n, F+1], or [n, classes, F+1]) and margins
        for what ``_native`` made of a model input."""

    def _native(self, data: ModelInput) -> Any:
        """A model input in the form the library explains it (as it is, unless a family says)."""
        return data

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self._raw(features_frame(batch, self.layout)), self.layout)

    def predict_arrow(self, batch: pa.RecordBatch) -> dict[str, pa.Array]:
        """Batch prediction's hot path: the output columns of an Arrow batch, computed on the
        scaled float64 matrix built from its columns in one copy (a DataFrame only when a feature
        is categorical: its typed column needs pandas)."""
        return arrow_outputs(self.raw_arrow(batch), self.layout)

    def raw_arrow(self, batch: pa.RecordBatch) -> np.ndarray:
        """The model's float64 predictions of an Arrow batch (the second class's probability,
        every class's, or the value): ``predict_arrow``'s, and what evaluation reduces without
        building an output column."""
        if batch.num_rows == 0:
            return np.empty(0)
        if self.layout.categorical:
            data: Any = features_frame(batch.to_pandas(), self.layout)
        else:
            data = arrow_matrix(batch, self.layout)
        return self._raw(data).astype(np.float64, copy=False)

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """Validated request records -> one result each (the serving path: no DataFrame when it can)."""
        return output_records(self._raw(self._items_data(items)), self.layout)

    def _items_data(self, items: list[Any]) -> ModelInput:
        """Request records as the model's input, for predictions and explanations alike: typed
        columns when a feature is categorical, else the scaled float32 matrix (no DataFrame)."""
        return records_frame(items, self.layout) if self.layout.categorical else record_matrix(items, self.layout)

    # ------------------------------------------------------------------ explanations (TreeSHAP)
    def explain(self, batch: pd.DataFrame) -> pd.DataFrame:
        """TreeSHAP contributions of each row (``rayline.families.base.Explainer``).

        One column per layout feature, then ``bias`` and ``margin``; per row, bias plus the
        features' contributions equals the margin: the log-odds of the second class (binary),
        the raw score (regression), or the margin of the row's predicted class (multiclass:
        the libraries explain every class; the predicted one, the highest margin, is kept).
        """
        data = self._native(features_frame(batch, self.layout))
        contribs, margins = predicted_class(*self._contributions(data))
        return explanation_frame(contribs, margins, self.layout.features, batch.index)

    def explain_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """``explain`` for validated request records: ``{"contributions": {feature: float},
        "bias", "margin"}`` each, plus the record's prediction as ``predict_items`` answers it."""
        data = self._native(self._items_data(items))
        contribs, margins = predicted_class(*self._contributions(data))
        predictions = output_records(self._raw(data), self.layout)
        return explanation_records(contribs, margins, self.layout.features, predictions)
