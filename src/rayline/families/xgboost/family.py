"""XGBoost on tables: the training loop, checkpoint format and batch predictor.

Checkpoint folder: ``model.ubj`` (the booster, cut at its best iteration) and ``meta.json``
(family, table layout, MinMax statistics, objective, final metrics).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost  # this module is only imported when the xgboost family is used

from rayline.data.table_schema import TableLayout
from rayline.data.tables import (
    encode_label,
    features_frame,
    output_frame,
    output_records,
    record_matrix,
    records_frame,
)
from rayline.errors import DataError, SpecError, first_line, map_error
from rayline.families.base import LoopContext
from rayline.families.resume import finished, report_again, resume_point
from rayline.families.treeshap import explanation_frame, explanation_records, predicted_class
from rayline.families.xgboost.spec import XGBoostModelSpec
from rayline.spec import Spec

MODEL_FILE = "model.ubj"
META_FILE = "meta.json"

# Per-round metrics are cheap ones; AUC (a sort of the validation set) is computed once at the end.
_EVAL_METRICS = {"binary": ["error", "logloss"], "multiclass": ["merror", "mlogloss"], "regression": ["mae", "rmse"]}
_OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
_TOP_LEVEL_TUNABLE = {"num_boost_round", "early_stopping_rounds"}


# How xgboost words a parameter it refuses: "value -3 for Parameter max_depth should be greater
# equal to 0", "Invalid Input: 'x', valid values are: ...", "Unknown objective function: `x`".
_PARAM_REFUSED = re.compile(r"for Parameter \w+|valid values are|Unknown (?:objective|metric)")


def _params_refused(err: BaseException) -> SpecError | None:
    """xgboost's refusal of a value in ``model.params`` as a spec error naming the field."""
    line = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", first_line(err))  # "[07:50:20] src/objective.cc:27: "
    if not _PARAM_REFUSED.search(line):
        return None
    field = "model.objective" if line.startswith("Unknown objective") else "model.params"
    return SpecError(f"{field}: xgboost refused a value: {line}")


def _check_params(params: Mapping[str, Any], dtrain: Any) -> None:
    """The run's parameters configured once before any boosting (milliseconds, no tree built), at
    verbosity 1, where xgboost names those nothing uses ("Parameters: { "max_dept" } are not
    used"): rayline boosts at verbosity 0, where a misspelt name would change nothing, silently."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xgboost.Booster({**params, "verbosity": 1}, [dtrain]).save_config()
        except xgboost.core.XGBoostError as err:
            raise _params_refused(err) or map_error(err, during="training") from None
    for warning in caught:
        unused = re.search(r"Parameters: \{ (.+) \} are not used", str(warning.message))
        if unused is not None:
            names = ", ".join(re.findall(r'"([^"]+)"', unused.group(1)))
            raise SpecError(
                f"model.params: xgboost does not use {names}: misspelt, or meant for another booster or objective?",
                hint="see https://xgboost.readthedocs.io/en/stable/parameter.html",
            )


def objective_for(spec: XGBoostModelSpec, task: str) -> str:
    return spec.objective if ":" in spec.objective else _OBJECTIVES[task]


def _rename(task: str, name: str, value: float, prefix: str = "valid_") -> dict[str, float]:
    """xgboost metric names -> rayline's: valid_loss, valid_accuracy, valid_<metric>.

    ``valid_loss`` repeats the log loss / RMSE on purpose: a spec's ``metric: valid_loss`` then
    means the same for every family (the report draws the pair as one curve).
    """
    out = {f"{prefix}{name}": value}
    if name in ("logloss", "mlogloss", "rmse"):
        out[f"{prefix}loss"] = value
    if name in ("error", "merror"):
        out[f"{prefix}accuracy"] = 1.0 - value
    return out


def _train_metrics(task: str, model: Any, dtrain: Any) -> dict[str, float]:
    """The same metrics on the training split, as ``train_<metric>`` (for the report's learning curves).

    Evaluated here, at the sparse report cadence, rather than by putting ``dtrain`` in
    ``evals``: xgboost would then score it every round, which nearly doubled the boosting time
    of taxi (1M rows); here the booster's training-prediction cache makes it a metric pass.
    """
    out: dict[str, float] = {}
    for item in str(model.eval_set([(dtrain, "train")])).split("\t")[1:]:  # "[i]\ttrain-logloss:0.6\t..."
        name, _, value = item.removeprefix("train-").rpartition(":")
        out.update(_rename(task, name, float(value), prefix="train_"))
    return out


def _dmatrix(frame: pd.DataFrame, layout: TableLayout, cpus: int) -> Any:
    return xgboost.DMatrix(
        features_frame(frame, layout),
        label=encode_label(frame[layout.label], layout),
        nthread=cpus,
        enable_categorical=bool(layout.categorical),
    )


# ------------------------------------------------------------------------------ training
Curves = dict[str, list[float]]  # validation metric -> its value after each round, from round 1


def _reporter(
    ctx: LoopContext,
    task: str,
    every: int,
    total: int,
    meta: Mapping[str, Any],
    start: int,
    before: Curves,
    dtrain: Any = None,
) -> Any:
    """An xgboost callback reporting (and checkpointing) every ``every`` rounds.

    Not Ray's ``RayTrainReportCallback``, which reports every round: a report is a
    synchronisation point, so they must be sparse (docs/benchmarks.md). A checkpoint carries the
    validation curves so far (``meta["curves"]``): a run resumed from it (``start`` rounds done,
    ``before`` its curves; xgboost numbers a continued run's rounds from 0) keeps one history.
    With ``dtrain``, each report also carries the training split's metrics (``train_*``).
    """

    class Reporter(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            done = start + epoch + 1
            if done % every == 0 and done < total:
                metrics: dict[str, float] = {"round": float(done)}
                for name, values in evals_log.get("valid", {}).items():
                    metrics.update(_rename(task, name, float(values[-1])))
                if dtrain is not None:  # before the rank split: on several workers it is collective
                    metrics.update(_train_metrics(task, model, dtrain))
                if ctx.rank != 0:
                    ctx.report(metrics)
                    return False
                curves = _joined(before, evals_log.get("valid", {}))
                with tempfile.TemporaryDirectory(prefix="rayline-ckpt-") as tmp:
                    folder = save_checkpoint(model, {**meta, "metrics": metrics, "curves": curves}, Path(tmp) / "ckpt")
                    ctx.report(metrics, folder)
            return False

    return Reporter()


def _joined(before: Curves, after: Mapping[str, Any]) -> Curves:
    return {name: [*before.get(name, []), *(float(v) for v in values)] for name, values in after.items()}


def save_checkpoint(booster: Any, meta: Mapping[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(folder / MODEL_FILE))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return folder


def train_booster(config: Mapping[str, Any], ctx: LoopContext) -> None:
    """The loop shared by the in-process, Tune-trial and Ray Train paths."""
    spec = Spec.model_validate(config["spec"])
    model = spec.model
    assert isinstance(model, XGBoostModelSpec)
    layout = TableLayout.from_dict(config["layout"])
    point = resume_point(ctx)
    if point is not None and finished(point[1], "rounds_run"):
        report_again(ctx, *point)  # its booster is cut at the best round: nothing to train on
        return
    resumed = (xgboost.Booster(model_file=str(point[0] / MODEL_FILE)), point[1].get("curves", {})) if point else None
    train, valid = ctx.frame("train"), ctx.frame("valid")
    dtrain = _dmatrix(train, layout, ctx.cpus)
    dvalid = _dmatrix(valid, layout, ctx.cpus)

    params: dict[str, Any] = {
        **model.params,
        "objective": objective_for(model, layout.task),
        "eval_metric": _EVAL_METRICS[layout.task],
        "nthread": ctx.cpus,
    }
    if layout.task == "multiclass":
        params["num_class"] = len(layout.classes)
    params.setdefault("verbosity", 0)
    if spec.scaling.use_gpu:
        params.setdefault("device", "cuda")  # Ray Train made this worker's GPU its only visible one
    _check_params(params, dtrain)
    before: Curves = resumed[1] if resumed else {}
    start = resumed[0].num_boosted_rounds() if resumed else 0
    history: dict[str, Any] = {}
    meta = {"family": "xgboost", "data_kind": "table", "layout": layout.to_dict(), "objective": params["objective"]}
    reporter = _reporter(ctx, layout.task, spec.train.report_every, model.num_boost_round, meta, start, before, dtrain)
    boost_start = time.perf_counter()
    try:
        booster = xgboost.train(
            params,
            dtrain,
            num_boost_round=model.num_boost_round - start,
            evals=[(dvalid, "valid")],
            evals_result=history,
            early_stopping_rounds=model.early_stopping_rounds,
            callbacks=[reporter],
            verbose_eval=False,
            xgb_model=resumed[0] if resumed else None,
        )
    except xgboost.core.XGBoostError as err:
        raise _params_refused(err) or map_error(err, during="training") from None

    boost_s = time.perf_counter() - boost_start
    curves = _joined(before, history.get("valid", {}))
    rounds = booster.num_boosted_rounds()
    best = rounds - 1
    if model.early_stopping_rounds and curves:
        # xgboost's early stopping watches the last metric; the whole curve, not only the rounds
        # since a resume (its patience restarts there), decides the best round.
        watched = curves[list(curves)[-1]]
        best = int(np.argmin(watched)) if start else int(getattr(booster, "best_iteration", best))
    booster = booster[: best + 1]  # keep the trees up to the best validation round
    final: dict[str, float] = {"round": float(best + 1), "rounds_run": float(rounds), "time_boost_s": boost_s}
    if start:
        final["resumed_from_round"] = float(start)  # time_boost_s counts the rounds since
    for name, values in curves.items():
        final.update(_rename(layout.task, name, values[best]))
    if layout.task == "binary":
        booster.set_param({"eval_metric": "auc"})
        final["valid_auc"] = float(booster.eval(dvalid, "valid").split(":")[-1])
    if ctx.rank != 0:
        ctx.report(final)
        return
    with tempfile.TemporaryDirectory(prefix="rayline-ckpt-") as tmp:
        ctx.report(final, save_checkpoint(booster, {**meta, "metrics": final}, Path(tmp) / "checkpoint"))


# ----------------------------------------------------------------------------- predicting
class XGBoostPredictor:
    """A booster and its table layout; ``predict`` maps feature rows to output columns, ``explain``
    says why (an ``Explainer``: TreeSHAP contributions)."""

    def __init__(self, checkpoint: Path, *, cpus: int = 1) -> None:
        meta_path = checkpoint / META_FILE
        if not meta_path.is_file() or not (checkpoint / MODEL_FILE).is_file():
            raise DataError(f"{checkpoint} is not an xgboost checkpoint (no {MODEL_FILE} / {META_FILE})")
        self.meta = json.loads(meta_path.read_text())
        self.layout = TableLayout.from_dict(self.meta["layout"])
        self.booster = xgboost.Booster(model_file=str(checkpoint / MODEL_FILE))
        self.booster.set_param({"nthread": cpus})

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self._raw(batch), self.layout)

    def _raw(self, batch: pd.DataFrame) -> np.ndarray:
        matrix = xgboost.DMatrix(features_frame(batch, self.layout), enable_categorical=bool(self.layout.categorical))
        return np.asarray(self.booster.predict(matrix))

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """Validated request records -> one result each (the serving path: no DataFrame when it can)."""
        data = self._items_data(items)
        if isinstance(data, pd.DataFrame):  # a DMatrix refuses what float32 cannot hold (1e300)
            matrix = xgboost.DMatrix(_float32_range(data), enable_categorical=True)
            raw = np.asarray(self.booster.predict(matrix))
        else:
            raw = np.asarray(self.booster.inplace_predict(data))
        return output_records(raw, self.layout)

    def _items_data(self, items: list[Any]) -> pd.DataFrame | np.ndarray:
        """Request records as the model's input, for predictions and explanations alike: typed
        columns when a feature is categorical, else the scaled float32 matrix (no DataFrame)."""
        if self.layout.categorical:
            return records_frame(items, self.layout)
        return record_matrix(items, self.layout)

    # ------------------------------------------------------------------ explanations (TreeSHAP)
    def explain(self, batch: pd.DataFrame) -> pd.DataFrame:
        """TreeSHAP contributions of each row (``rayline.families.base.Explainer``).

        One column per layout feature, then ``bias`` and ``margin``; per row, bias plus the
        features' contributions equals the margin: the log-odds of the second class (binary),
        the raw score (regression), or the margin of the row's predicted class (multiclass:
        xgboost explains every class; the predicted one, the highest margin, is kept).
        """
        data = _float32_range(features_frame(batch, self.layout))
        matrix = xgboost.DMatrix(data, enable_categorical=bool(self.layout.categorical))
        contribs, margins = predicted_class(*self._contributions(matrix))
        return explanation_frame(contribs, margins, self.layout.features, batch.index)

    def explain_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """``explain`` for validated request records: ``{"contributions": {feature: float},
        "bias", "margin"}`` each, plus the record's prediction as ``predict_items`` answers it."""
        data = _float32_range(self._items_data(items))
        # Contributions need a DMatrix (inplace_predict has none); the matrix gets the booster's
        # feature names, which xgboost checks.
        names = None if isinstance(data, pd.DataFrame) else self.layout.features
        matrix = xgboost.DMatrix(data, feature_names=names, enable_categorical=bool(self.layout.categorical))
        contribs, margins = predicted_class(*self._contributions(matrix))
        predictions = output_records(np.asarray(self.booster.predict(matrix)), self.layout)
        return explanation_records(contribs, margins, self.layout.features, predictions)

    def _contributions(self, matrix: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature contributions (bias last: [n, F+1], or [n, classes, F+1]) and margins."""
        try:
            contribs = np.asarray(self.booster.predict(matrix, pred_contribs=True))
            margins = np.asarray(self.booster.predict(matrix, output_margin=True))
        except xgboost.core.XGBoostError as err:
            raise map_error(err, during="explaining") from None
        return contribs, margins


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32_range(data: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
    """Numbers past float32's range (1e300 is a valid double; infinity, once made float32) clipped
    to its ends. A DMatrix refuses infinity, which ``inplace_predict`` takes; every split
    threshold lies inside the range, so an end takes the same branch as infinity would, and
    the explanation is of the prediction ``predict_items`` made. Missing values stay missing."""
    if isinstance(data, np.ndarray):
        return np.clip(data, -_FLOAT32_MAX, _FLOAT32_MAX)
    out = data.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col].dtype):  # integers (int64) all fit float32's range
            out[col] = out[col].clip(-_FLOAT32_MAX, _FLOAT32_MAX)
    return out


class XGBoostFamily:
    name = "xgboost"
    data_kind = XGBoostModelSpec.data_kind
    predict_batch_size = 4096
    step_key = "round"

    def reports(self, spec: Spec) -> int:
        model = spec.model
        assert isinstance(model, XGBoostModelSpec)
        return max(1, math.ceil(model.num_boost_round / spec.train.report_every))

    def train_loop(self, config: Mapping[str, Any], ctx: LoopContext) -> None:
        train_booster(config, ctx)

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer(train_loop, **kwargs)

    def load(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> XGBoostPredictor:
        return XGBoostPredictor(checkpoint, cpus=cpus)  # trees have no reduced-precision mode here

    def tunable(self, spec: Spec) -> set[str]:
        # Any xgboost parameter may be searched; the top-level loop settings too.
        return {"*"}

    def importance(self, checkpoint: Path) -> dict[str, float]:
        scores = XGBoostPredictor(checkpoint).booster.get_score(importance_type="gain")
        return {name: float(value) for name, value in scores.items() if isinstance(value, int | float)}

    def with_trial(self, spec: Spec, trial: Mapping[str, Any]) -> Spec:
        model = spec.model
        assert isinstance(model, XGBoostModelSpec)
        top = {k: v for k, v in trial.items() if k in _TOP_LEVEL_TUNABLE}
        params = {**model.params, **{k: v for k, v in trial.items() if k not in _TOP_LEVEL_TUNABLE}}
        new_model = model.model_copy(update={**top, "params": params})
        return spec.model_copy(update={"model": new_model})
