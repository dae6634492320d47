"""XGBoost on tables: the native boosting loop, checkpoint format and predictor
(what ``rayline.families.trees`` leaves to a tree family).

Checkpoint folder: ``model.ubj`` (the booster, cut at its best iteration) and ``meta.json``
(family, table layout, MinMax statistics, objective, final metrics).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost  # this module is only imported when the xgboost family is used

from rayline.data.table_schema import TableLayout
from rayline.data.tables import encode_label, features_frame
from rayline.errors import SpecError, first_line, map_error
from rayline.families.trees import ModelInput, TreeFamily, TreePredictor, TreeRun, metric_entries
from rayline.families.xgboost.spec import XGBoostModelSpec

MODEL_FILE = "model.ubj"

# Per-round metrics are cheap ones; AUC (a sort of the validation set) is computed once at the end.
_EVAL_METRICS = {"binary": ["error", "logloss"], "multiclass": ["merror", "mlogloss"], "regression": ["mae", "rmse"]}
_OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}


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


def _train_metrics(model: Any, dtrain: Any) -> dict[str, float]:
    """The same metrics on the training split, as ``train_<metric>`` (for the report's learning curves).

    Evaluated here, at the sparse report cadence, rather than by putting ``dtrain`` in
    ``evals``: xgboost would then score it every round, which nearly doubled the boosting time
    of taxi (1M rows); here the booster's training-prediction cache makes it a metric pass.
    """
    out: dict[str, float] = {}
    for item in str(model.eval_set([(dtrain, "train")])).split("\t")[1:]:  # "[i]\ttrain-logloss:0.6\t..."
        name, _, value = item.removeprefix("train-").rpartition(":")
        out.update(metric_entries(name, float(value), prefix="train_"))
    return out


def _dmatrix(frame: pd.DataFrame, layout: TableLayout, cpus: int) -> Any:
    return xgboost.DMatrix(
        features_frame(frame, layout),
        label=encode_label(frame[layout.label], layout),
        nthread=cpus,
        enable_categorical=bool(layout.categorical),
    )


# ------------------------------------------------------------------------------ training
def _reporter(run: TreeRun[XGBoostModelSpec], dtrain: Any) -> Any:
    """An xgboost callback reporting (and checkpointing) when ``run.due``, with the training
    split's metrics (``train_*``). Not Ray's ``RayTrainReportCallback``, which reports every
    round. xgboost numbers a continued run's rounds from 0."""

    class Reporter(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            done = run.start + epoch + 1
            if run.due(done):
                metrics: dict[str, float] = {"round": float(done)}
                for name, values in evals_log.get("valid", {}).items():
                    metrics.update(metric_entries(name, float(values[-1])))
                # Before the rank split (in run.checkpoint): on several workers it is collective.
                metrics.update(_train_metrics(model, dtrain))
                run.checkpoint(metrics, evals_log.get("valid", {}), lambda folder: _save(model, folder))
            return False

    return Reporter()


def _save(booster: Any, folder: Path) -> None:
    booster.save_model(str(folder / MODEL_FILE))


# ----------------------------------------------------------------------------- predicting
class XGBoostPredictor(TreePredictor):
    """``TreePredictor`` for an xgboost booster: serving predicts on the float32 matrix in place
    (no DMatrix) when no feature is categorical."""

    family = "xgboost"
    model_file = MODEL_FILE

    def _load(self, path: Path) -> Any:
        booster = xgboost.Booster(model_file=str(path))
        booster.set_param({"nthread": self.cpus})
        return booster

    def _raw(self, data: Any) -> np.ndarray:
        if isinstance(data, np.ndarray):
            return np.asarray(self.booster.inplace_predict(data))
        if isinstance(data, pd.DataFrame):
            data = self._native(data)
        return np.asarray(self.booster.predict(data))

    def _native(self, data: ModelInput) -> Any:
        """A DMatrix (contributions need one; ``inplace_predict`` has none) holding no number
        float32 cannot hold (a DMatrix refuses 1e300); a matrix gets the booster's feature
        names, which xgboost checks."""
        names = None if isinstance(data, pd.DataFrame) else self.layout.features
        return xgboost.DMatrix(
            _float32_range(data), feature_names=names, enable_categorical=bool(self.layout.categorical)
        )

    def _contributions(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            contribs = np.asarray(self.booster.predict(data, pred_contribs=True))
            margins = np.asarray(self.booster.predict(data, output_margin=True))
        except xgboost.core.XGBoostError as err:
            raise map_error(err, during="explaining") from None
        return contribs, margins


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32_range(data: ModelInput) -> ModelInput:
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


class XGBoostFamily(TreeFamily[XGBoostModelSpec]):
    name = "xgboost"
    spec_class = XGBoostModelSpec
    predictor = XGBoostPredictor

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer(train_loop, **kwargs)

    def importance(self, checkpoint: Path) -> dict[str, float]:
        scores = XGBoostPredictor(checkpoint).booster.get_score(importance_type="gain")
        return {name: float(value) for name, value in scores.items() if isinstance(value, int | float)}

    def resume(self, folder: Path) -> tuple[Any, int]:
        booster = xgboost.Booster(model_file=str(folder / MODEL_FILE))
        return booster, booster.num_boosted_rounds()

    def boost(self, run: TreeRun[XGBoostModelSpec]) -> None:
        model, layout, ctx = run.model, run.layout, run.ctx
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
        if run.spec.scaling.use_gpu:
            params.setdefault("device", "cuda")  # Ray Train made this worker's GPU its only visible one
        _check_params(params, dtrain)
        run.objective = params["objective"]
        history: dict[str, Any] = {}
        with run.boosting(xgboost.core.XGBoostError, _params_refused):
            booster = xgboost.train(
                params,
                dtrain,
                num_boost_round=model.num_boost_round - run.start,
                evals=[(dvalid, "valid")],
                evals_result=history,
                early_stopping_rounds=model.early_stopping_rounds,
                callbacks=[_reporter(run, dtrain)],
                verbose_eval=False,
                xgb_model=run.booster,
            )
        curves = run.curves(history.get("valid", {}))
        rounds = booster.num_boosted_rounds()
        best = rounds - 1
        if model.early_stopping_rounds and curves:
            # xgboost's early stopping watches the last metric; the whole curve, not only the rounds
            # since a resume (its patience restarts there), decides the best round.
            watched = curves[list(curves)[-1]]
            best = int(np.argmin(watched)) if run.start else int(getattr(booster, "best_iteration", best))
        booster = booster[: best + 1]  # keep the trees up to the best validation round
        final = run.final(curves, best + 1, rounds)
        if layout.task == "binary":
            booster.set_param({"eval_metric": "auc"})
            final["valid_auc"] = float(booster.eval(dvalid, "valid").split(":")[-1])
        run.finish(final, lambda folder: _save(booster, folder))
