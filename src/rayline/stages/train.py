"""Train stage: spec -> data -> the family's loop (in-process or Ray Train workers) -> registry.

Execution path by size (``scaling.num_workers``):
- ``auto`` and data that fits: the loop runs in this process with every CPU as native threads
  (a Ray Train run's start-up costs more than training a modest table: docs/benchmarks.md).
- a number, or remote/big data: the family's Ray Train trainer with that many workers, fed by
  Ray Data shards, reporting sparsely.
Both paths write the same checkpoint format and the same registry entry.

Resuming (``resume=True``, ``rayline train --resume``): both paths keep their latest checkpoint
where running the same spec again finds it (``rayline.stages.resume_state``). A run without ``resume``
clears that state and starts from the beginning; a registered run clears it too, so resuming
never registers a run twice. The registry entry is only written at the end: an interrupted run
leaves none, and the resumed one is the single run, its history going on from the checkpoint's
step.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayline import mlflow_model, runtime
from rayline.data import Prepared
from rayline.errors import RaylineError, TrainError, first_line, map_error
from rayline.families import Family
from rayline.registry import ActiveRun, Registry, open_registry
from rayline.spec import Spec
from rayline.stages import heartbeat
from rayline.stages.contexts import LocalContext, saved_state, split_for_workers, train_worker
from rayline.stages.engine import plugs, prepare, trains_in_process
from rayline.stages.resume_state import clear_local, clear_storage, local_state, train_key, train_resumable
from rayline.stages.training_profile import profiled_rows, store_profile

ProgressFn = Callable[[Mapping[str, float]], None]
NoticeFn = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    metrics: dict[str, float]
    history: list[dict[str, float]]
    path: str  # "local" or "ray-train:<N>"
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # undecodable image files left out
    resumed: bool = False  # went on from an interrupted run's checkpoint


@dataclass(frozen=True)
class Fit:
    """What one training left for the registry (``log_run``): the final report, every report
    (the final one last), the final checkpoint's folder, and where it ran."""

    metrics: Mapping[str, float]
    history: list[dict[str, float]]
    checkpoint: Path
    path: str  # "local", "ray-train:<N>" or "tune-trial"


def model_params(spec: Spec) -> dict[str, Any]:
    """What the registry records as the run's params."""
    dumped = spec.model_dump(mode="json")
    params = {f"model.{k}": v for k, v in dumped["model"].items() if k != "params"}
    params.update({f"model.params.{k}": v for k, v in dumped["model"].get("params", {}).items()})
    params.update({f"split.{k}": v for k, v in dumped["split"].items()})
    params["data.source"] = spec.data.source
    return params


def require_gpus(spec: Spec) -> None:
    """With ``scaling.use_gpu``, the GPUs one run's workers take must exist (on the embedded Ray)."""
    if spec.scaling.use_gpu:
        workers, share = spec.scaling.workers, spec.scaling.gpus_per_worker
        runtime.require_gpus(workers * share, f"scaling.use_gpu with {workers} worker(s) x gpus_per_worker={share:g}")


def worker_resources(spec: Spec, total_cpus: float) -> tuple[int, float]:
    """(workers, CPUs each), leaving a slice of CPU free so Ray Data tasks can still be scheduled."""
    workers = spec.scaling.workers
    if spec.scaling.cpus_per_worker is not None:
        runtime.require_node_for(spec.scaling.cpus_per_worker, "scaling.cpus_per_worker")
        return workers, spec.scaling.cpus_per_worker
    return workers, runtime.cpus_per_actor(total_cpus, float("inf"), workers)


def scaling_config(spec: Spec, workers: int, cpus_each: float) -> Any:
    """Ray Train's ScalingConfig: ``workers`` of ``cpus_each`` CPUs, and the spec's GPU share each."""
    import ray.train

    resources: dict[str, float] = {"CPU": cpus_each}
    if spec.scaling.use_gpu:
        resources["GPU"] = spec.scaling.gpus_per_worker
    return ray.train.ScalingConfig(
        num_workers=workers,
        use_gpu=spec.scaling.use_gpu,
        resources_per_worker=resources,
        placement_strategy=spec.scaling.placement.upper(),
    )


# Ray Train retries a worker group that did not start (60 s each: no node had the resources)
# without limit by default; a cluster that cannot hold the workers then waits forever.
CONTROLLER_RETRIES = 2


def failure_config(spec: Spec) -> Any:
    """``scaling.max_failures`` worker failures recovered; a few failed starts, then an error."""
    import ray.train

    # ray.train resolves to Train V2 at run time; its type stubs name the V1 class.
    return ray.train.FailureConfig(  # type: ignore[call-arg]
        max_failures=spec.scaling.max_failures, controller_failure_limit=CONTROLLER_RETRIES
    )


def run_local(spec: Spec, family: Family, data: Prepared, on_report: ProgressFn | None, *, resume: bool) -> Fit:
    workdir = local_state(spec)
    if not resume:
        clear_local(spec)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = LocalContext(data.frames, cpus=runtime.local_cpus(), workdir=workdir, on_report=on_report, resume=resume)
    family.train_loop(data.config, ctx)
    if ctx.checkpoint is None:
        raise TrainError(f"the {family.name} loop finished without a checkpoint")
    return Fit(ctx.history[-1], ctx.history, ctx.checkpoint, "local")


def run_ray_train(spec: Spec, family: Family, data: Prepared, total_cpus: float) -> Fit:
    """Fit with Ray Train V2; the checkpoint is a local copy of the final one.

    The run is named ``train_key(spec)``: a run of that name with a snapshot in storage is
    restored from its latest checkpoint (the caller clears it for a fresh start). Worker
    failures are recovered from the latest checkpoint ``scaling.max_failures`` times.
    """
    import ray.train

    workers, cpus_each = worker_resources(spec, total_cpus)
    with heartbeat.watch("the Ray Train run", spec.train.stall_timeout_s, "train.stall_timeout_s") as stall:
        held, streamed = split_for_workers(data.datasets, workers)
        config = {**data.config, "worker_cpus": max(1, int(cpus_each)), "progress": stall.board, "held_splits": held}
        trainer = family.trainer(
            train_worker,
            train_loop_config=config,
            scaling_config=scaling_config(spec, workers, cpus_each),
            run_config=ray.train.RunConfig(
                name=train_key(spec),
                storage_path=runtime.storage_path(),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
                failure_config=failure_config(spec),
            ),
            datasets=streamed,
        )
        try:
            result = trainer.fit()
        except Exception as err:  # TrainingFailedError wraps the worker's exception
            if stall.message is not None:
                raise  # the watch says why
            raise map_error(err, during="Ray Train run") from None
    if result.checkpoint is None:
        raise TrainError("Ray Train run finished without a checkpoint")
    history = [dict(m) for _, m in (result.best_checkpoints or [])]
    local = Path(tempfile.mkdtemp(prefix="rayline-train-", dir=runtime.home())) / "checkpoint"
    # as_directory: the checkpoint folder itself on local storage (a download cleaned up after,
    # on remote storage). to_directory() copied every checkpoint into /tmp and left it there.
    with result.checkpoint.as_directory() as folder:
        shutil.copytree(folder, local)
    return Fit(dict(result.metrics or {}), history, local, f"ray-train:{workers}")


def log_run(
    registry: Registry,
    spec: Spec,
    family: Family,
    fit: Fit,
    data: Prepared,
    seconds: Mapping[str, float],
    *,
    kind: str = "train",
    parent_id: str | None = None,
    extra_params: Mapping[str, Any] | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> str:
    tags = {"rayline.path": fit.path, **(extra_tags or {})}
    with registry.start_run(spec.name, kind=kind, family=family.name, spec=spec, parent_id=parent_id, tags=tags) as run:
        run.log_params({**model_params(spec), **(extra_params or {})})
        run.set_tags({f"rayline.data.{k}": v for k, v in data.fingerprint.items()})
        log_steps(run, fit.history, family.step_key)
        run.log_metrics({k: v for k, v in fit.metrics.items() if k != family.step_key})
        run.log_metrics({f"time_{k}_s": v for k, v in seconds.items()})
        # profile.json travels with the model: serving and `rayline drift` compare new rows with it.
        store_profile(fit.checkpoint, data, family)
        log_model(run, fit.checkpoint, data, family)
        return run.run_id


def log_steps(run: ActiveRun, history: list[dict[str, float]], step_key: str) -> None:
    """Every report but the final one as the run's steps: the final report is the run's metrics.
    A resumed run that had already finished reports it once more (so compare by value)."""
    run.log_history([h for h in history if step_key in h and h != history[-1]], step_key=step_key)


def log_model(run: ActiveRun, checkpoint: Path, data: Prepared, family: Family) -> None:
    """The checkpoint as an MLflow model (``model/``: MLflow's tools load and serve it). One that
    cannot be written is a warning: the trained model is registered as a bare checkpoint."""
    with tempfile.TemporaryDirectory(prefix="rayline-model-") as tmp:
        try:
            folder = mlflow_model.save(checkpoint, profiled_rows(data, checkpoint, family), Path(tmp) / "model")
        except Exception as err:
            log.warning("the model is stored as a bare checkpoint, not an MLflow model: %s", first_line(err))
            run.log_checkpoint(checkpoint)
            return
        run.log_model(folder)


def train(
    spec: Spec,
    *,
    on_report: ProgressFn | None = None,
    registry: Registry | None = None,
    resume: bool = False,
    notice: NoticeFn | None = None,
) -> TrainResult:
    """Train the spec's model once and register it. Returns the run id and final metrics.

    ``resume``: go on from the last checkpoint an interrupted run of the same spec left; with
    none, say so (``notice``, else the log) and start from the beginning.
    """
    start = time.perf_counter()
    family, kind = plugs(spec)
    require_gpus(spec)
    local = trains_in_process(spec, kind)
    registry = registry or open_registry()
    # Importing mlflow and opening the store take seconds: do it while the data loads (or Ray starts).
    warm = threading.Thread(target=lambda: registry.client, name="rayline-registry-warmup", daemon=True)
    warm.start()
    key = train_key(spec)
    try:
        if local:
            resumed = resume and saved_state(local_state(spec)) is not None
            _say_resume(spec, resume, resumed, notice)
            data = prepare(spec, family, kind, in_process=True)
            # Not while training: a thread importing Python code beside the model's threads on
            # every core slows them down as much as the overlap saves (docs/benchmarks.md).
            warm.join()
            t0 = time.perf_counter()
            fit = run_local(spec, family, data, on_report, resume=resume)
            fit_s = time.perf_counter() - t0
        else:
            resources = runtime.init()
            worker_resources(spec, resources.cpus)  # workers no node can hold: say so before reading data
            runtime.require_shared_storage()
            resumed = resume and train_resumable(key)
            if not resumed:
                clear_storage(key)  # an older run's folder, or checkpoints never registered
            _say_resume(spec, resume, resumed, notice)
            data = prepare(spec, family, kind, in_process=False)
            t0 = time.perf_counter()
            fit = run_ray_train(spec, family, data, resources.cpus)
            fit_s = time.perf_counter() - t0
        seconds = {"data": data.seconds, "fit": fit_s, "total": time.perf_counter() - start}
        warm.join()
        resumed_tag = {"rayline.resumed": "true"} if resumed else None
        run_id = log_run(registry, spec, family, fit, data, seconds, extra_tags=resumed_tag)
        # Registered: the resume state has served its purpose, and a later --resume must not
        # register this run a second time.
        if local:
            clear_local(spec)
        else:
            shutil.rmtree(fit.checkpoint.parent, ignore_errors=True)
            clear_storage(key)
    except RaylineError:
        raise
    except Exception as err:
        raise map_error(err, during="training") from None
    return TrainResult(
        run_id=run_id,
        metrics=dict(fit.metrics),
        history=fit.history,
        path=fit.path,
        seconds=seconds,
        skipped=data.skipped,
        resumed=resumed,
    )


def _say_resume(spec: Spec, asked: bool, found: bool, notice: NoticeFn | None) -> None:
    if not asked:
        return
    if found:
        line = f"resuming {spec.name} from the last checkpoint of its interrupted run"
    else:
        line = f"nothing to resume for {spec.name} (spec hash {spec.fingerprint()}): training from the start"
    (notice or log.warning)(line)
