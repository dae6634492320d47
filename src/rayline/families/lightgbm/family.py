"""LightGBM on tables: the training loop, checkpoint format and batch predictor.

Checkpoint folder: ``model.txt`` (the booster as text, cut at its best iteration) and
``meta.json`` (family, table layout, MinMax statistics, objective, final metrics).

Metric names match the xgboost family's, so a spec's ``metric:`` means the same for both:
``valid_loss`` is the log loss for a class label and the RMSE for a number, ``valid_accuracy``
is one minus the error rate, and ``valid_auc`` (binary only) is computed once, at the end.

On several Ray Train workers, LightGBM's data-parallel tree learner grows the same trees on every
worker but evaluates each worker's own validation rows, without combining the metrics across
workers. Early stopping on sharded validation data would stop the workers at different rounds
and leave the others waiting on the network. So ``trainer`` gives every worker the whole
validation split (only ``train`` is sharded): all workers see the same metrics and stop together.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightgbm  # this module is only imported when the lightgbm family is used
import numpy as np
import pandas as pd

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
from rayline.families.lightgbm.spec import LightGBMModelSpec, objective_task
from rayline.families.resume import finished, report_again, resume_point
from rayline.families.treeshap import explanation_frame, explanation_records, predicted_class
from rayline.spec import Spec

MODEL_FILE = "model.txt"
META_FILE = "meta.json"

# Per-round metrics, the loss first: early stopping watches the first one only.
_METRICS = {
    "binary": ["binary_logloss", "binary_error"],
    "multiclass": ["multi_logloss", "multi_error"],
    "regression": ["l2", "l1"],
}
_OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
# lightgbm metric name -> the xgboost family's (valid_<name>); l2 becomes rmse (its square root).
_NAMES = {
    "binary_logloss": "logloss",
    "binary_error": "error",
    "multi_logloss": "mlogloss",
    "multi_error": "merror",
    "l1": "mae",
}
_TOP_LEVEL_TUNABLE = {"num_boost_round", "early_stopping_rounds"}
# Parameters rayline sets, under any of their lightgbm aliases: a user's value would only
# conflict with rayline's (lightgbm warns and picks one).
_OWNED = {
    *("objective", "objective_type", "app", "application", "loss"),
    *("metric", "metrics", "metric_types"),
    *("num_threads", "num_thread", "nthread", "nthreads", "n_jobs"),
    *("num_class", "num_classes"),
}
_SEED_ALIASES = ("seed", "random_seed", "random_state")
_VERBOSITY_ALIASES = ("verbosity", "verbose")
_DEVICE_ALIASES = ("device_type", "device")
_TREE_LEARNER_ALIASES = ("tree_learner", "tree", "tree_type", "tree_learner_type")


def _params_refused(err: BaseException) -> SpecError | None:
    """LightGBM's check of a value in ``model.params`` ("Check failed: (num_leaves) > (1) at
    .../config_auto.cpp, line 352") as a spec error naming the field, without the source path."""
    line = first_line(err)
    if "config" not in line or "Check failed" not in line:
        return None
    return SpecError(f"model.params: lightgbm refused a value: {line.split(' at ')[0]}")


_NETWORK = {"machines", "num_machines", "local_listen_port", "tree_learner", "pre_partition", "time_out"}


def _check_params(params: Mapping[str, Any]) -> None:
    """LightGBM checks every parameter when it builds a dataset: a four-row one, built before the
    real work at verbosity 0, refuses a bad ``model.params`` value or an unknown name as one line
    (rayline trains at verbosity -1, where LightGBM would ignore a misspelt name silently). Its
    refusal is also printed on the process's stderr from C++, which only a redirect of the file
    descriptor keeps quiet; its warnings come through Python's stdout."""
    probe = {k: v for k, v in params.items() if k not in _NETWORK and k not in _VERBOSITY_ALIASES}
    said = io.StringIO()
    try:
        with _quiet_stderr(), contextlib.redirect_stdout(said):
            data = np.zeros((4, 1))
            lightgbm.Dataset(data, label=np.array([0.0, 1.0, 0.0, 1.0]), params={**probe, "verbosity": 0}).construct()
    except lightgbm.basic.LightGBMError as err:
        raise _params_refused(err) or map_error(err, during="training") from None
    unknown = re.findall(r"Unknown parameter: (\S+)", said.getvalue())
    if unknown:
        raise SpecError(
            f"model.params: lightgbm has no parameter {', '.join(unknown)}: misspelt?",
            hint="see https://lightgbm.readthedocs.io/en/stable/Parameters.html",
        )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def objective_for(spec: LightGBMModelSpec, layout: TableLayout) -> str:
    """The lightgbm objective: the spec's, or the one the label's task implies."""
    if spec.objective == "auto":
        return _OBJECTIVES[layout.task]
    implied = objective_task(spec.objective)
    if implied != layout.task:
        raise DataError(
            f"model.objective {spec.objective} is a {implied} objective, but label {layout.label!r} makes this a "
            f"{layout.task} task" + (f" ({len(layout.classes)} classes)" if layout.classes else ""),
            hint="set model.objective to auto",
        )
    return spec.objective


def _rename(name: str, value: float, prefix: str = "valid_") -> dict[str, float]:
    """lightgbm metric names -> rayline's: valid_loss, valid_accuracy, valid_<metric>.

    ``valid_loss`` repeats the log loss / RMSE on purpose, as the xgboost family's does.
    """
    if name == "l2":
        rmse = math.sqrt(max(value, 0.0))
        return {f"{prefix}rmse": rmse, f"{prefix}loss": rmse}
    short = _NAMES.get(name, name)
    out = {f"{prefix}{short}": value}
    if short in ("logloss", "mlogloss"):
        out[f"{prefix}loss"] = value
    if short in ("error", "merror"):
        out[f"{prefix}accuracy"] = 1.0 - value
    return out


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (the Mann-Whitney statistic, ties averaged); None when one class is missing."""
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def model_section(spec: Spec) -> LightGBMModelSpec:
    """``spec.model``, typed: the spec's model union is built at run time, so a type checker cannot narrow it."""
    model: object = spec.model
    if not isinstance(model, LightGBMModelSpec):
        raise TypeError(f"expected a lightgbm model section, got {type(model).__name__}")
    return model


def train_params(model: LightGBMModelSpec, spec: Spec, layout: TableLayout, ctx: LoopContext) -> dict[str, Any]:
    """The spec's ``params`` plus what rayline sets: objective, metrics, threads, seed, device, network."""
    params: dict[str, Any] = {k: v for k, v in model.params.items() if k not in _OWNED}
    params.update(objective=objective_for(model, layout), metric=_METRICS[layout.task], num_threads=ctx.cpus)
    if layout.task == "multiclass":
        params["num_class"] = len(layout.classes)
    if not any(k in params for k in _SEED_ALIASES):
        params["seed"] = spec.split.seed
    if not any(k in params for k in _VERBOSITY_ALIASES):
        params["verbosity"] = -1
    if spec.scaling.use_gpu and not any(k in params for k in _DEVICE_ALIASES):
        params["device_type"] = "gpu"  # needs a lightgbm built with GPU support
    if ctx.world_size > 1:
        from ray.train.lightgbm import get_network_params

        if not any(k in params for k in _TREE_LEARNER_ALIASES):
            params["tree_learner"] = "data_parallel"
        params["pre_partition"] = True  # each worker holds its own shard of the train split
        params.update(get_network_params())  # num_machines, machines, local_listen_port
    return params


# ------------------------------------------------------------------------------ training
Curves = dict[str, list[float]]  # lightgbm metric -> its validation value after each round, from round 1


class _Reporter:
    """A lightgbm callback reporting (and checkpointing) every ``every`` rounds.

    Not Ray's ``RayTrainReportCallback``, which reports every round: a report is a
    synchronisation point, so they must be sparse (docs/benchmarks.md). A checkpoint carries the
    validation curves so far (``meta["curves"]``), so a run resumed from it keeps one history;
    lightgbm numbers a continued run's rounds on from its ``init_model``'s.
    """

    before_iteration = False

    def __init__(
        self, ctx: LoopContext, every: int, total: int, meta: Mapping[str, Any], before: Curves, history: Any
    ) -> None:
        self.ctx, self.every, self.total, self.meta = ctx, every, total, meta
        self.before, self.history = before, history
        # After record_evaluation (20: ``history`` has this round), before early_stopping (30).
        # On the instance: lightgbm.train gives a callback without an ``order`` in its
        # ``__dict__`` a negative one (it ran first, a class attribute notwithstanding).
        self.order = 25

    def __call__(self, env: lightgbm.callback.CallbackEnv) -> None:
        done = env.iteration + 1
        if done % self.every or done >= self.total:
            return
        metrics: dict[str, float] = {"round": float(done)}
        for result in env.evaluation_result_list or []:
            if result[0] == "valid":
                metrics.update(_rename(str(result[1]), float(result[2])))
        # The training split's metrics at the report cadence only (not in ``valid_sets``, which
        # scores every round): lightgbm keeps the training scores, so this is a metric pass. On
        # several workers each scores its own shard (lightgbm does not combine metrics).
        booster = env.model
        assert isinstance(booster, lightgbm.Booster)  # lightgbm.train's callbacks get a Booster (cv's a CVBooster)
        for result in booster.eval_train():
            metrics.update(_rename(str(result[1]), float(result[2]), prefix="train_"))
        if self.ctx.rank != 0:
            self.ctx.report(metrics)
            return
        meta = {**self.meta, "metrics": metrics, "curves": _joined(self.before, self.history.get("valid", {}))}
        with tempfile.TemporaryDirectory(prefix="rayline-ckpt-") as tmp:
            folder = save_checkpoint(env.model, meta, Path(tmp) / "ckpt", iterations=-1)
            self.ctx.report(metrics, folder)


def _joined(before: Curves, after: Mapping[str, Any]) -> Curves:
    return {name: [*before.get(name, []), *(float(v) for v in values)] for name, values in after.items()}


def save_checkpoint(booster: Any, meta: Mapping[str, Any], folder: Path, *, iterations: int) -> Path:
    """``iterations``: rounds to keep (<= 0: all)."""
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(folder / MODEL_FILE), num_iteration=iterations)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return folder


def train_booster(config: Mapping[str, Any], ctx: LoopContext) -> None:
    """The loop shared by the in-process, Tune-trial and Ray Train paths."""
    spec = Spec.model_validate(config["spec"])
    model = model_section(spec)
    layout = TableLayout.from_dict(config["layout"])
    point = resume_point(ctx)
    if point is not None and finished(point[1], "rounds_run"):
        report_again(ctx, *point)  # its booster is cut at the best round: nothing to train on
        return
    resumed = (lightgbm.Booster(model_file=str(point[0] / MODEL_FILE)), point[1].get("curves", {})) if point else None
    params = train_params(model, spec, layout, ctx)
    _check_params(params)
    train, valid = ctx.frame("train"), ctx.frame("valid")
    valid_x, valid_y = features_frame(valid, layout), encode_label(valid[layout.label], layout)
    # Columns of pandas' category dtype (data.categorical) are split on natively as categories.
    dtrain = lightgbm.Dataset(
        features_frame(train, layout), label=encode_label(train[layout.label], layout), categorical_feature="auto"
    )
    dvalid = lightgbm.Dataset(valid_x, label=valid_y, reference=dtrain, categorical_feature="auto")

    before: Curves = resumed[1] if resumed else {}
    start = resumed[0].current_iteration() if resumed else 0
    history: dict[str, Any] = {}
    meta = {"family": "lightgbm", "data_kind": "table", "layout": layout.to_dict(), "objective": params["objective"]}
    callbacks: list[Any] = [
        lightgbm.record_evaluation(history),
        _Reporter(ctx, spec.train.report_every, model.num_boost_round, meta, before, history),
    ]
    if model.early_stopping_rounds:
        callbacks.append(lightgbm.early_stopping(model.early_stopping_rounds, first_metric_only=True, verbose=False))
    boost_start = time.perf_counter()
    try:
        booster = lightgbm.train(
            params,
            dtrain,
            num_boost_round=model.num_boost_round - start,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=callbacks,
            init_model=resumed[0] if resumed else None,
        )
    except lightgbm.basic.LightGBMError as err:
        raise _params_refused(err) or map_error(err, during="training") from None

    boost_s = time.perf_counter() - boost_start
    curves = _joined(before, history.get("valid", {}))
    rounds = len(next(iter(curves.values()), [])) or booster.current_iteration()
    # best_iteration is 1-based, 0 without early stopping; the returned booster already ends there.
    best = booster.best_iteration if booster.best_iteration > 0 else rounds
    if start and model.early_stopping_rounds and curves:
        # Early stopping watches the first metric; the whole curve, not only the rounds since a
        # resume (its patience restarts there), decides the best round.
        best = int(np.argmin(next(iter(curves.values())))) + 1
    final: dict[str, float] = {"round": float(best), "rounds_run": float(rounds), "time_boost_s": boost_s}
    if start:
        final["resumed_from_round"] = float(start)  # time_boost_s counts the rounds since
    for name, values in curves.items():
        final.update(_rename(name, values[best - 1]))
    if layout.task == "binary" and ctx.rank == 0:
        # Over the whole validation split: an AUC of this worker's share alone is not the run's.
        every_x, every_y = valid_x, valid_y
        if ctx.world_size > 1:
            every = ctx.whole("valid")
            every_x, every_y = features_frame(every, layout), encode_label(every[layout.label], layout)
        scores = np.asarray(booster.predict(every_x, num_iteration=best, num_threads=ctx.cpus))
        auc = _auc(every_y, scores)
        if auc is not None:
            final["valid_auc"] = auc
    if ctx.rank != 0:
        ctx.report(final)
        return
    with tempfile.TemporaryDirectory(prefix="rayline-ckpt-") as tmp:
        folder = save_checkpoint(booster, {**meta, "metrics": final}, Path(tmp) / "checkpoint", iterations=best)
        ctx.report(final, folder)


# ----------------------------------------------------------------------------- predicting
class LightGBMPredictor:
    """A booster and its table layout; ``predict`` maps feature rows to output columns, ``explain``
    says why (an ``Explainer``: TreeSHAP contributions)."""

    def __init__(self, checkpoint: Path, *, cpus: int = 1) -> None:
        meta_path = checkpoint / META_FILE
        if not meta_path.is_file() or not (checkpoint / MODEL_FILE).is_file():
            raise DataError(f"{checkpoint} is not a lightgbm checkpoint (no {MODEL_FILE} / {META_FILE})")
        self.meta = json.loads(meta_path.read_text())
        self.layout = TableLayout.from_dict(self.meta["layout"])
        self.cpus = max(1, cpus)
        try:
            self.booster = lightgbm.Booster(model_file=str(checkpoint / MODEL_FILE))
        except lightgbm.basic.LightGBMError as err:
            raise DataError(f"{checkpoint}: cannot load the lightgbm model ({str(err).strip()[:200]})") from None

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self._raw(features_frame(batch, self.layout)), self.layout)

    def _raw(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(data, num_threads=self.cpus))

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """Validated request records -> one result each (the serving path: no DataFrame when it can)."""
        return output_records(self._raw(self._items_data(items)), self.layout)

    def _items_data(self, items: list[Any]) -> pd.DataFrame | np.ndarray:
        """Request records as the model's input, for predictions and explanations alike."""
        return records_frame(items, self.layout) if self.layout.categorical else record_matrix(items, self.layout)

    # ------------------------------------------------------------------ explanations (TreeSHAP)
    def explain(self, batch: pd.DataFrame) -> pd.DataFrame:
        """TreeSHAP contributions of each row (``rayline.families.base.Explainer``).

        One column per layout feature, then ``bias`` and ``margin``; per row, bias plus the
        features' contributions equals the margin (LightGBM's ``raw_score``): the log-odds of
        the second class (binary), the raw score (regression), or the margin of the row's
        predicted class (multiclass: LightGBM explains every class; the predicted one is kept).
        """
        contribs, margins = predicted_class(*self._contributions(features_frame(batch, self.layout)))
        return explanation_frame(contribs, margins, self.layout.features, batch.index)

    def explain_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """``explain`` for validated request records: ``{"contributions": {feature: float},
        "bias", "margin"}`` each, plus the record's prediction as ``predict_items`` answers it."""
        data = self._items_data(items)
        contribs, margins = predicted_class(*self._contributions(data))
        predictions = output_records(self._raw(data), self.layout)
        return explanation_records(contribs, margins, self.layout.features, predictions)

    def _contributions(self, data: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature contributions (bias last: [n, F+1], or [n, classes, F+1]) and margins."""
        try:
            contribs = np.asarray(self.booster.predict(data, pred_contrib=True, num_threads=self.cpus))
            margins = np.asarray(self.booster.predict(data, raw_score=True, num_threads=self.cpus))
        except lightgbm.basic.LightGBMError as err:
            raise map_error(err, during="explaining") from None
        if margins.ndim == 2:  # multiclass: LightGBM lays the classes' blocks side by side
            contribs = contribs.reshape(len(contribs), margins.shape[1], -1)
        return contribs, margins


class LightGBMFamily:
    name = "lightgbm"
    data_kind = LightGBMModelSpec.data_kind
    predict_batch_size = 4096
    step_key = "round"

    def reports(self, spec: Spec) -> int:
        model = model_section(spec)
        return max(1, math.ceil(model.num_boost_round / spec.train.report_every))

    def train_loop(self, config: Mapping[str, Any], ctx: LoopContext) -> None:
        train_booster(config, ctx)

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        import ray.train
        from ray.train.lightgbm import LightGBMTrainer

        # Every worker evaluates the whole validation split (see the module docstring).
        kwargs.setdefault("dataset_config", ray.train.DataConfig(datasets_to_split=["train"]))
        return LightGBMTrainer(train_loop, **kwargs)

    def load(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> LightGBMPredictor:
        return LightGBMPredictor(checkpoint, cpus=cpus)  # trees have no reduced-precision mode here

    def tunable(self, spec: Spec) -> set[str]:
        # Any lightgbm parameter may be searched; the top-level loop settings too.
        return {"*"}

    def importance(self, checkpoint: Path) -> dict[str, float]:
        predictor = LightGBMPredictor(checkpoint)
        gain = predictor.booster.feature_importance(importance_type="gain")
        # The layout's names: lightgbm rewrites some (spaces become underscores) in its own.
        return {name: float(g) for name, g in zip(predictor.layout.features, gain.tolist(), strict=True)}

    def with_trial(self, spec: Spec, trial: Mapping[str, Any]) -> Spec:
        model = model_section(spec)
        top = {k: v for k, v in trial.items() if k in _TOP_LEVEL_TUNABLE}
        params = {**model.params, **{k: v for k, v in trial.items() if k not in _TOP_LEVEL_TUNABLE}}
        new_model = model.model_copy(update={**top, "params": params})
        return spec.model_copy(update={"model": new_model})
