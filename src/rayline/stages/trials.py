"""Registering a finished search: the tune run, every trial, and the best trial's model.

A trial that raised is a FAILED trial run with its error (the search ended with the others).
``rayline.stages.tune`` runs the search and calls ``register``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayline.data import Prepared
from rayline.errors import root_cause
from rayline.families import Family
from rayline.registry import Registry
from rayline.spec import Spec
from rayline.stages.train import Fit, log_run, log_steps


@dataclass
class FailedTrial:
    run_id: str
    config: dict[str, Any]
    error: str  # the root cause, one line


@dataclass
class TuneResult:
    run_id: str
    best_run_id: str
    best_config: dict[str, Any]
    best_metrics: dict[str, float]
    trials: int
    seconds: float
    trial_seconds: list[float] = field(default_factory=list)
    failed: list[FailedTrial] = field(default_factory=list)  # trials that raised, registered as FAILED
    resumed: bool = False  # an interrupted search was restored


def register(
    spec: Spec, family: Family, data: Prepared, grid: Any, best: Any, registry: Registry, seconds: float
) -> TuneResult:
    step_key = family.step_key
    best_run_id = ""
    trial_seconds: list[float] = []
    failed: list[FailedTrial] = []
    with registry.start_run(spec.name, kind="tune", family=family.name, spec=spec) as parent:
        parent.log_params(
            {
                "tune.num_samples": spec.tune.num_samples,
                "tune.scheduler": spec.tune.scheduler,
                **{f"tune.space.{k}": v.model_dump(exclude_none=True) for k, v in spec.tune.space.items()},
            }
        )
        for result in (grid[i] for i in range(len(grid))):
            config = dict(result.config or {})
            if result.error is not None:
                run_id = _log_failed_trial(registry, family.with_trial(spec, config), family, result, parent.run_id)
                failed.append(FailedTrial(run_id=run_id, config=config, error=root_cause(result.error)))
                continue
            if result.metrics is None or spec.metric not in result.metrics:
                continue
            frame = result.metrics_dataframe
            history = frame.to_dict("records") if frame is not None else [dict(result.metrics)]
            history = steps_once(
                [
                    {
                        k: v
                        for k, v in h.items()
                        if isinstance(v, int | float) and k.startswith(("valid_", "train_", step_key))
                    }
                    for h in history
                ],
                step_key,
            )
            trial_seconds.append(float(result.metrics.get("time_total_s", 0.0)))
            is_best = result.path == best.path
            trial_spec = family.with_trial(spec, config)
            with contextlib.ExitStack() as stack:  # as_directory: no copy left behind in /tmp
                ckpt = None
                if is_best and result.checkpoint:
                    ckpt = Path(stack.enter_context(result.checkpoint.as_directory()))
                run_id = _log_trial(registry, trial_spec, family, result, history, ckpt, data, parent.run_id, config)
            if is_best:
                best_run_id = run_id
        parent.log_metrics(
            {
                f"best_{spec.metric}": float(best.metrics[spec.metric]),
                "trials": float(len(grid)),
                "trials_failed": float(len(failed)),
            }
        )
        parent.log_metrics({"time_total_s": seconds})
        parent.set_tags({"rayline.best_trial_run": best_run_id})
    return TuneResult(
        run_id=parent.run_id,
        best_run_id=best_run_id,
        best_config=dict(best.config or {}),
        best_metrics={k: float(v) for k, v in best.metrics.items() if isinstance(v, int | float)},
        trials=len(grid),
        seconds=seconds,
        trial_seconds=trial_seconds,
        failed=failed,
    )


def steps_once(history: list[dict[str, float]], step_key: str) -> list[dict[str, float]]:
    """Each step once, the last report of it winning, then the final report as is.

    A trial resumed from its checkpoint reports again the steps it had reported after it (Tune
    keeps both in the trial's results).
    """
    steps = {h[step_key]: h for h in history[:-1] if step_key in h}
    return [steps[k] for k in sorted(steps)] + history[-1:]


def _log_trial(
    registry: Registry,
    spec: Spec,
    family: Family,
    result: Any,
    history: list[dict[str, float]],
    checkpoint: Path | None,
    data: Prepared,
    parent_id: str,
    config: dict[str, Any],
) -> str:
    # resumed_from_round: the trial went on from its checkpoint after a restored search.
    metrics = {
        k: float(v)
        for k, v in result.metrics.items()
        if isinstance(v, int | float) and (k.startswith("valid_") or k.startswith("resumed_from_"))
    }
    params = {f"trial.{k}": v for k, v in config.items()}
    if checkpoint is not None:
        fit = Fit(metrics, history, checkpoint, "tune-trial")
        seconds = {"total": float(result.metrics.get("time_total_s", 0.0))}
        return log_run(
            registry, spec, family, fit, data, seconds, kind="trial", parent_id=parent_id, extra_params=params
        )
    with registry.start_run(spec.name, kind="trial", family=family.name, parent_id=parent_id) as run:
        run.log_params(params)
        log_steps(run, history, family.step_key)
        run.log_metrics(metrics)
        return run.run_id


def _log_failed_trial(registry: Registry, spec: Spec, family: Family, result: Any, parent_id: str) -> str:
    """A trial that raised: a FAILED trial run with its sampled values, its error and what it reported."""
    config = dict(result.config or {})
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    with registry.start_run(spec.name, kind="trial", family=family.name, parent_id=parent_id) as run:
        run.log_params({f"trial.{k}": v for k, v in config.items()})
        run.log_metrics({k: v for k, v in metrics.items() if k.startswith("valid_")})
        run.set_tags({"rayline.error": root_cause(result.error)})
        run.failed = True
        return run.run_id
