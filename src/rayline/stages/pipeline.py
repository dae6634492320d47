"""The whole lifecycle from one spec: train -> tune -> predict -> evaluate -> report (`rayline run`).

Each stage is the same function the single commands call; this only sequences them, reports
which stage is running, and pins the model that predict and evaluate use: the best run right
after tuning, resolved once, so a run finishing meanwhile cannot change it halfway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rayline.registry import Registry, headline_keys, open_registry
from rayline.spec import Spec
from rayline.stages.evaluate import Evaluation, evaluate
from rayline.stages.predict import PredictResult, predict
from rayline.stages.report import build_report
from rayline.stages.train import TrainResult, train
from rayline.stages.tune import TuneResult, tune

StageFn = Callable[[str], None]
ReportFn = Callable[[str, Mapping[str, float]], None]


@dataclass
class StageResult:
    name: str
    seconds: float
    run_id: str
    summary: str


@dataclass
class LifecycleResult:
    """What `rayline run` did: one entry per stage, and the model it picked."""

    model_run_id: str
    stages: list[StageResult] = field(default_factory=list)
    train: TrainResult | None = None
    tune: TuneResult | None = None
    predict: PredictResult | None = None
    evaluation: Evaluation | None = None
    reports: list[Path] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def _metrics(values: Mapping[str, float], prefix: str = "valid_") -> str:
    shown = headline_keys(values, prefix)
    return ", ".join(f"{k}={values[k]:.4f}" for k in shown[:3])


def run(
    spec: Spec,
    *,
    with_tune: bool | None = None,
    on_stage: StageFn | None = None,
    on_report: ReportFn | None = None,
    registry: Registry | None = None,
) -> LifecycleResult:
    """Run every stage of the spec. ``with_tune`` defaults to whether ``tune.space`` is set."""
    registry = registry or open_registry()
    tuning = bool(spec.tune.space) if with_tune is None else with_tune
    stages: list[StageResult] = []

    def begin(name: str) -> float:
        if on_stage is not None:
            on_stage(name)
        return time.perf_counter()

    def progress(name: str) -> Callable[[Mapping[str, float]], None]:
        return lambda metrics: on_report(name, metrics) if on_report is not None else None

    start = begin("train")
    trained = train(spec, on_report=progress("train"), registry=registry)
    stages.append(StageResult("train", time.perf_counter() - start, trained.run_id, _metrics(trained.metrics)))

    tuned = None
    if tuning:
        start = begin("tune")
        tuned = tune(spec, on_report=progress("tune"), registry=registry)
        summary = f"{tuned.trials} trials; best {tuned.best_config}: {_metrics(tuned.best_metrics)}"
        stages.append(StageResult("tune", time.perf_counter() - start, tuned.run_id, summary))

    best = registry.resolve(spec.name, "best", metric=spec.metric, mode=spec.mode).run_id
    start = begin("predict")
    predicted = predict(spec, model=best, registry=registry)
    summary = f"{predicted.rows:,} rows -> {predicted.output}"
    stages.append(StageResult("predict", time.perf_counter() - start, predicted.run_id, summary))

    start = begin("evaluate")
    evaluation = evaluate(spec, model=best, registry=registry)
    summary = ", ".join(
        [f"{k}={v:.4f}" for k, v in evaluation.metrics.items()] + [f"{k}=n/a" for k in evaluation.undefined]
    )
    stages.append(StageResult("evaluate", time.perf_counter() - start, best, summary))

    start = begin("report")
    reports = [build_report(best, registry=registry)]
    if tuned is not None:
        reports.append(build_report(tuned.run_id, registry=registry))
    summary = " ".join(str(folder / "report.html") for folder in reports)
    stages.append(StageResult("report", time.perf_counter() - start, best, summary))
    return LifecycleResult(best, stages, trained, tuned, predicted, evaluation, reports)
