"""LightGBM on tables: the native boosting loop, checkpoint format and predictor
(what ``rayline.families.trees`` leaves to a tree family).

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
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightgbm  # this module is only imported when the lightgbm family is used
import numpy as np
import pandas as pd

from rayline.data.table_schema import TableLayout
from rayline.data.tables import encode_label, features_frame
from rayline.errors import DataError, SpecError, first_line, map_error
from rayline.families.base import LoopContext
from rayline.families.lightgbm.spec import LightGBMModelSpec, objective_task
from rayline.families.trees import TreeFamily, TreePredictor, TreeRun, metric_entries
from rayline.spec import Spec

MODEL_FILE = "model.txt"

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
    """A lightgbm metric -> rayline's, by the xgboost family's name (``metric_entries``)."""
    if name == "l2":
        return metric_entries("rmse", math.sqrt(max(value, 0.0)), prefix)
    return metric_entries(_NAMES.get(name, name), value, prefix)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (the Mann-Whitney statistic, ties averaged); None when one class is missing."""
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
class _Reporter:
    """A lightgbm callback reporting (and checkpointing) when ``run.due``. Not Ray's
    ``RayTrainReportCallback``, which reports every round. lightgbm numbers a continued run's
    rounds on from its ``init_model``'s."""

    before_iteration = False

    def __init__(self, run: TreeRun[LightGBMModelSpec], history: Any) -> None:
        self.run, self.history = run, history
        # After record_evaluation (20: ``history`` has this round), before early_stopping (30).
        # On the instance: lightgbm.train gives a callback without an ``order`` in its
        # ``__dict__`` a negative one (it ran first, a class attribute notwithstanding).
        self.order = 25

    def __call__(self, env: lightgbm.callback.CallbackEnv) -> None:
        done = env.iteration + 1
        if not self.run.due(done):
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
        self.run.checkpoint(metrics, self.history.get("valid", {}), lambda folder: _save(booster, folder, -1))


def _save(booster: Any, folder: Path, iterations: int) -> None:
    """``iterations``: rounds to keep (<= 0: all)."""
    booster.save_model(str(folder / MODEL_FILE), num_iteration=iterations)


# ----------------------------------------------------------------------------- predicting
class LightGBMPredictor(TreePredictor):
    """``TreePredictor`` for a lightgbm booster: it predicts on frames and matrices alike."""

    family = "lightgbm"
    model_file = MODEL_FILE

    def _load(self, path: Path) -> Any:
        try:
            return lightgbm.Booster(model_file=str(path))
        except lightgbm.basic.LightGBMError as err:
            raise DataError(f"{path.parent}: cannot load the lightgbm model ({str(err).strip()[:200]})") from None

    def _raw(self, data: Any) -> np.ndarray:
        return np.asarray(self.booster.predict(data, num_threads=self.cpus))

    def _contributions(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            contribs = np.asarray(self.booster.predict(data, pred_contrib=True, num_threads=self.cpus))
            margins = np.asarray(self.booster.predict(data, raw_score=True, num_threads=self.cpus))
        except lightgbm.basic.LightGBMError as err:
            raise map_error(err, during="explaining") from None
        if margins.ndim == 2:  # multiclass: LightGBM lays the classes' blocks side by side
            contribs = contribs.reshape(len(contribs), margins.shape[1], -1)
        return contribs, margins


class LightGBMFamily(TreeFamily[LightGBMModelSpec]):
    name = "lightgbm"
    spec_class = LightGBMModelSpec
    predictor = LightGBMPredictor

    def rename(self, name: str, value: float, prefix: str = "valid_") -> dict[str, float]:
        return _rename(name, value, prefix)

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        import ray.train
        from ray.train.lightgbm import LightGBMTrainer

        # Every worker evaluates the whole validation split (see the module docstring).
        kwargs.setdefault("dataset_config", ray.train.DataConfig(datasets_to_split=["train"]))
        return LightGBMTrainer(train_loop, **kwargs)

    def importance(self, checkpoint: Path) -> dict[str, float]:
        predictor = LightGBMPredictor(checkpoint)
        gain = predictor.booster.feature_importance(importance_type="gain")
        # The layout's names: lightgbm rewrites some (spaces become underscores) in its own.
        return {name: float(g) for name, g in zip(predictor.layout.features, gain.tolist(), strict=True)}

    def resume(self, folder: Path) -> tuple[Any, int]:
        booster = lightgbm.Booster(model_file=str(folder / MODEL_FILE))
        return booster, booster.current_iteration()

    def boost(self, run: TreeRun[LightGBMModelSpec]) -> None:
        model, layout, ctx = run.model, run.layout, run.ctx
        params = train_params(model, run.spec, layout, ctx)
        _check_params(params)
        run.objective = params["objective"]
        train, valid = ctx.frame("train"), ctx.frame("valid")
        valid_x, valid_y = features_frame(valid, layout), encode_label(valid[layout.label], layout)
        # Columns of pandas' category dtype (data.categorical) are split on natively as categories.
        dtrain = lightgbm.Dataset(
            features_frame(train, layout), label=encode_label(train[layout.label], layout), categorical_feature="auto"
        )
        dvalid = lightgbm.Dataset(valid_x, label=valid_y, reference=dtrain, categorical_feature="auto")

        history: dict[str, Any] = {}
        callbacks: list[Any] = [lightgbm.record_evaluation(history), _Reporter(run, history)]
        if model.early_stopping_rounds:
            callbacks.append(
                lightgbm.early_stopping(model.early_stopping_rounds, first_metric_only=True, verbose=False)
            )
        with run.boosting(lightgbm.basic.LightGBMError, _params_refused):
            booster = lightgbm.train(
                params,
                dtrain,
                num_boost_round=model.num_boost_round - run.start,
                valid_sets=[dvalid],
                valid_names=["valid"],
                callbacks=callbacks,
                init_model=run.booster,
            )
        curves = run.curves(history.get("valid", {}))
        rounds = len(next(iter(curves.values()), [])) or booster.current_iteration()
        # best_iteration is 1-based, 0 without early stopping; the returned booster already ends there.
        best = booster.best_iteration if booster.best_iteration > 0 else rounds
        if run.start and model.early_stopping_rounds and curves:
            # Early stopping watches the first metric; the whole curve, not only the rounds since a
            # resume (its patience restarts there), decides the best round.
            best = int(np.argmin(next(iter(curves.values())))) + 1
        final = run.final(curves, best, rounds)
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
        run.finish(final, lambda folder: _save(booster, folder, best))
