"""rayline: from data to a served model on Ray, from one declarative spec.

The Python API mirrors the CLI::

    spec = rayline.load_spec("examples/taxi.yaml", ["model.num_boost_round=50"])
    run = rayline.train(spec)              # rayline train (resume=True: --resume)
    best = rayline.tune(spec)              # rayline tune (resume=True: --resume)
    out = rayline.predict(spec, model="best")   # rayline predict
    report = rayline.evaluate(spec)        # rayline evaluate
    shift = rayline.drift(run.run_id, input="new.parquet")  # rayline drift
    rayline.promote(run.run_id, "champion")  # rayline promote (refuses a worse candidate)
    service = rayline.serve(spec)          # rayline serve (returns once healthy)
    everything = rayline.run(spec)         # rayline run: train, tune, predict, evaluate
    draft = rayline.init_spec("data.csv", label="churned")  # rayline init: a spec from the data
    draft.write("churn.yaml"); rayline.run(draft.spec)
    from rayline.verify import verify      # rayline verify: every path gives the same answers
    check = verify(spec, model="champion")
    replayed = rayline.replay(spec, capture="captured/", model=run.run_id)  # rayline replay

Heavy dependencies (ray, torch, mlflow) load on first use, not on ``import rayline``.
"""

from __future__ import annotations

import collections.abc
import os
import pathlib
from typing import TYPE_CHECKING, Any

from rayline._version import __version__
from rayline.errors import (
    DataError,
    DriftError,
    EvaluateError,
    ExplainError,
    JobError,
    PredictError,
    RaylineError,
    RegistryError,
    RuntimeStartError,
    ServeError,
    SpecError,
    StoreError,
    TrainError,
)
from rayline.registry import Registry, RunRecord, open_registry
from rayline.spec import Spec, load_spec, spec_from_dict

if TYPE_CHECKING:
    from rayline.autospec import Draft
    from rayline.serving.runner import Service
    from rayline.stages.drift import DriftReport
    from rayline.stages.evaluate import Evaluation
    from rayline.stages.pipeline import LifecycleResult
    from rayline.stages.predict import PredictResult
    from rayline.stages.promote import Promotion
    from rayline.stages.replay import ReplayResult
    from rayline.stages.train import TrainResult
    from rayline.stages.tune import TuneResult

__all__ = [
    "DataError",
    "DriftError",
    "EvaluateError",
    "ExplainError",
    "JobError",
    "PredictError",
    "RaylineError",
    "Registry",
    "RegistryError",
    "RunRecord",
    "RuntimeStartError",
    "ServeError",
    "Spec",
    "SpecError",
    "StoreError",
    "TrainError",
    "__version__",
    "drift",
    "evaluate",
    "init_spec",
    "load_spec",
    "open_registry",
    "predict",
    "promote",
    "replay",
    "run",
    "serve",
    "spec_from_dict",
    "train",
    "tune",
]


_SPEC_SOURCES = "from rayline.load_spec(path) or rayline.spec_from_dict(d)"
_MODEL = "a run id, an alias, 'best' or 'latest'"
_RUN = "a run id, a unique prefix of one, or an alias"


def _spec_arg(fn: str, value: object) -> Spec:
    """``value`` when it is a Spec; otherwise a one-line TypeError (a path or dict is a common slip)."""
    if isinstance(value, Spec):
        return value
    hint = ""
    if isinstance(value, str | os.PathLike):
        hint = f"; load it first: rayline.load_spec({os.fspath(value)!r})"
    elif isinstance(value, collections.abc.Mapping):
        hint = "; validate it first: rayline.spec_from_dict(d)"
    raise TypeError(f"rayline.{fn} expects a Spec ({_SPEC_SOURCES}), got {type(value).__name__}{hint}")


def _text_arg(fn: str, name: str, value: object, what: str) -> str:
    """``value`` when it is a non-empty str; else a TypeError naming the parameter and what it takes."""
    if isinstance(value, str) and value.strip():
        return value
    got = "an empty str" if isinstance(value, str) else type(value).__name__
    # Passing the spec where its run is wanted is the likely slip: say where a run id comes from.
    hint = "; e.g. rayline.train(spec).run_id" if isinstance(value, Spec) and name == "run_id" else ""
    raise TypeError(f"rayline.{fn}: {name} must be {what} (a str), got {got}{hint}")


def _checked(fn: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments stages share, checked (and paths made str) before any work starts."""
    if "model" in kwargs:
        kwargs["model"] = _text_arg(fn, "model", kwargs["model"], _MODEL)
    for name in ("input", "output"):  # stages treat these as text (URIs, suffixes): a Path becomes its str
        value = kwargs.get(name)
        if isinstance(value, os.PathLike):
            kwargs[name] = os.fspath(value)
        elif value is not None and not isinstance(value, str):
            raise TypeError(
                f"rayline.{fn}: {name} must be a path or URI (str or os.PathLike), got {type(value).__name__}"
            )
    out = kwargs.get("out")  # drift's folder: the stage joins file names onto it
    if isinstance(out, str | os.PathLike):
        kwargs["out"] = pathlib.Path(out)
    elif out is not None:
        raise TypeError(f"rayline.{fn}: out must be a folder path (str or os.PathLike), got {type(out).__name__}")
    if kwargs.get("spec") is not None:
        kwargs["spec"] = _spec_arg(f"{fn}(spec=...)", kwargs["spec"])
    return kwargs


def train(spec: Spec, **kwargs: Any) -> TrainResult:
    """Train once and register the run (see ``rayline.stages.train.train``)."""
    spec = _spec_arg("train", spec)
    from rayline.stages.train import train as _train

    return _train(spec, **kwargs)


def tune(spec: Spec, **kwargs: Any) -> TuneResult:
    """Search ``spec.tune.space`` and register every trial (see ``rayline.stages.tune.tune``)."""
    spec = _spec_arg("tune", spec)
    from rayline.stages.tune import tune as _tune

    return _tune(spec, **kwargs)


def predict(spec: Spec, **kwargs: Any) -> PredictResult:
    """Batch inference to parquet (see ``rayline.stages.predict.predict``)."""
    spec, kwargs = _spec_arg("predict", spec), _checked("predict", kwargs)
    from rayline.stages.predict import predict as _predict

    return _predict(spec, **kwargs)


def promote(run_id: str, alias: str, **kwargs: Any) -> Promotion:
    """Point ``alias`` of the spec's registered model at a run (see ``rayline.stages.promote.promote``)."""
    run_id = _text_arg("promote", "run_id", run_id, _RUN)
    alias = _text_arg("promote", "alias", alias, "an alias name such as 'champion'")
    kwargs = _checked("promote", kwargs)
    from rayline.stages.promote import promote as _promote

    return _promote(run_id, alias, **kwargs)


def drift(run_id: str, **kwargs: Any) -> DriftReport:
    """New rows against a model's training profile, PSI per feature (see ``rayline.stages.drift.drift``)."""
    run_id = _text_arg("drift", "run_id", run_id, _RUN)
    kwargs = _checked("drift", kwargs)
    from rayline.stages.drift import drift as _drift

    return _drift(run_id, **kwargs)


def evaluate(spec: Spec, **kwargs: Any) -> Evaluation:
    """Metrics of a registered model, stored on its run (see ``rayline.stages.evaluate.evaluate``)."""
    spec, kwargs = _spec_arg("evaluate", spec), _checked("evaluate", kwargs)
    from rayline.stages.evaluate import evaluate as _evaluate

    return _evaluate(spec, **kwargs)


def serve(spec: Spec, **kwargs: Any) -> Service:
    """Deploy a registered model on Ray Serve; returns once /healthz answers."""
    spec, kwargs = _spec_arg("serve", spec), _checked("serve", kwargs)
    from rayline.serving.runner import start

    return start(spec, **kwargs)


def run(spec: Spec, **kwargs: Any) -> LifecycleResult:
    """Train, tune (when ``tune.space`` is set), batch predict and evaluate (see ``rayline.stages.pipeline.run``)."""
    spec = _spec_arg("run", spec)
    from rayline.stages.pipeline import run as _run

    return _run(spec, **kwargs)


def init_spec(source: str | os.PathLike[str], **kwargs: Any) -> Draft:
    """A spec decided from the data at ``source``: label, task, features, family, tune space, each
    with its reason (see ``rayline.autospec.init_spec``; ``.spec`` runs, ``.write(path)`` keeps it)."""
    from rayline.autospec import init_spec as _init_spec

    return _init_spec(source, **kwargs)


def replay(spec: Spec, **kwargs: Any) -> ReplayResult:
    """Captured traffic scored by another run: agreement, prediction shift and, with labels, each
    metric's difference with a bootstrap interval (see ``rayline.stages.replay.replay``)."""
    spec, kwargs = _spec_arg("replay", spec), _checked("replay", kwargs)
    from rayline.stages.replay import replay as _replay

    return _replay(spec, **kwargs)
