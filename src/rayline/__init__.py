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

Heavy dependencies (ray, torch, mlflow) load on first use, not on ``import rayline``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rayline._version import __version__
from rayline.errors import (
    DataError,
    JobError,
    RaylineError,
    RegistryError,
    RuntimeStartError,
    ServeError,
    SpecError,
    TrainError,
)
from rayline.registry import Registry, RunRecord, open_registry
from rayline.spec import Spec, load_spec, spec_from_dict

if TYPE_CHECKING:
    from rayline.serving.runner import Service
    from rayline.stages.drift import DriftReport
    from rayline.stages.evaluate import Evaluation
    from rayline.stages.pipeline import LifecycleResult
    from rayline.stages.predict import PredictResult
    from rayline.stages.promote import Promotion
    from rayline.stages.train import TrainResult
    from rayline.stages.tune import TuneResult

__all__ = [
    "DataError",
    "JobError",
    "RaylineError",
    "Registry",
    "RegistryError",
    "RunRecord",
    "RuntimeStartError",
    "ServeError",
    "Spec",
    "SpecError",
    "TrainError",
    "__version__",
    "drift",
    "evaluate",
    "load_spec",
    "open_registry",
    "predict",
    "promote",
    "run",
    "serve",
    "spec_from_dict",
    "train",
    "tune",
]


def train(spec: Spec, **kwargs: Any) -> TrainResult:
    """Train once and register the run (see ``rayline.stages.train.train``)."""
    from rayline.stages.train import train as _train

    return _train(spec, **kwargs)


def tune(spec: Spec, **kwargs: Any) -> TuneResult:
    """Search ``spec.tune.space`` and register every trial (see ``rayline.stages.tune.tune``)."""
    from rayline.stages.tune import tune as _tune

    return _tune(spec, **kwargs)


def predict(spec: Spec, **kwargs: Any) -> PredictResult:
    """Batch inference to parquet (see ``rayline.stages.predict.predict``)."""
    from rayline.stages.predict import predict as _predict

    return _predict(spec, **kwargs)


def promote(run_id: str, alias: str, **kwargs: Any) -> Promotion:
    """Point ``alias`` of the spec's registered model at a run (see ``rayline.stages.promote.promote``)."""
    from rayline.stages.promote import promote as _promote

    return _promote(run_id, alias, **kwargs)


def drift(run_id: str, **kwargs: Any) -> DriftReport:
    """New rows against a model's training profile, PSI per feature (see ``rayline.stages.drift.drift``)."""
    from rayline.stages.drift import drift as _drift

    return _drift(run_id, **kwargs)


def evaluate(spec: Spec, **kwargs: Any) -> Evaluation:
    """Metrics of a registered model, stored on its run (see ``rayline.stages.evaluate.evaluate``)."""
    from rayline.stages.evaluate import evaluate as _evaluate

    return _evaluate(spec, **kwargs)


def serve(spec: Spec, **kwargs: Any) -> Service:
    """Deploy a registered model on Ray Serve; returns once /healthz answers."""
    from rayline.serving.runner import start

    return start(spec, **kwargs)


def run(spec: Spec, **kwargs: Any) -> LifecycleResult:
    """Train, tune (when ``tune.space`` is set), batch predict and evaluate (see ``rayline.stages.pipeline.run``)."""
    from rayline.stages.pipeline import run as _run

    return _run(spec, **kwargs)
