"""Tune stage: a search space from the spec, a Tuner over a function trainable, trials -> registry.

Current Ray (Train V2) no longer accepts ``Tuner(trainer)``: each trial is a function trainable
that reports with ``ray.tune.report``. For data that fits in memory the trial runs the family's
training loop itself (the data goes to the object store once and every trial reads it
zero-copy; a Train run per trial would pay Ray Train's start-up each time). For big data each
trial launches the family's Ray Train trainer, whose reports flow back through
``TuneReportCallback``.

Faults: the search is named after the spec and its fingerprint, so ``resume=True`` (``rayline
tune --resume``) restores an interrupted one (``Tuner.restore``): finished trials are kept,
unfinished ones go on from their last checkpoint (``ray.tune.get_checkpoint`` in the loop's
context; a big-data trial's Ray Train run is named after the trial, so it is restored too).
A trial that raises is recorded as a FAILED trial run with its error, and the search ends with
the others. A search without ``resume`` clears the old state; a registered one clears it too.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from rayline import runtime
from rayline.errors import SpecError, TrainError, map_error, root_cause
from rayline.families import Family, get_family
from rayline.registry import Registry, open_registry
from rayline.spec import SearchDomain, Spec
from rayline.stages.contexts import TuneTrialContext, split_for_workers, train_worker
from rayline.stages.engine import plugs, prepare, trains_in_process
from rayline.stages.heartbeat import Pulse, watch
from rayline.stages.resume_state import clear_storage, search_key, storage_folder
from rayline.stages.train import NoticeFn, ProgressFn, failure_config, require_gpus, scaling_config, worker_resources
from rayline.stages.trials import FailedTrial as FailedTrial  # re-exported: the stage's results
from rayline.stages.trials import TuneResult as TuneResult
from rayline.stages.trials import register

log = logging.getLogger(__name__)


def search_space(spec: Spec, family: Family) -> dict[str, Any]:
    """The spec's ``tune.space`` as Ray Tune domains; names are checked against the family."""

    allowed = family.tunable(spec)
    space: dict[str, Any] = {}
    for name, domain in spec.tune.space.items():
        if "*" not in allowed and name not in allowed:
            raise SpecError(f"tune.space.{name}: {family.name} cannot tune {name!r}; expected one of {sorted(allowed)}")
        space[name] = _domain(domain)
    if not space:
        raise SpecError("tune.space is empty: name at least one parameter, e.g. max_depth: {randint: [2, 12]}")
    return space


def _domain(d: SearchDomain) -> Any:
    from ray import tune

    if d.randint is not None:
        return tune.randint(*d.randint)
    if d.uniform is not None:
        return tune.uniform(*d.uniform)
    if d.loguniform is not None:
        return tune.loguniform(*d.loguniform)
    assert d.choice is not None
    return tune.choice(d.choice)


def _local_trial(config: dict[str, Any], *, base: dict[str, Any], frames: dict[str, Any], cpus: int) -> None:
    """One trial on in-memory data: apply the sampled values, run the loop here."""
    spec = Spec.model_validate(base["spec"])
    family = get_family(base["family"])
    trial_spec = family.with_trial(spec, config)
    loop_config = {**base, "spec": trial_spec.model_dump(mode="json")}
    with tempfile.TemporaryDirectory(prefix="rayline-trial-") as tmp:
        ctx = TuneTrialContext(frames, cpus=cpus, workdir=Path(tmp), pulse=Pulse(base.get("progress")))
        family.train_loop(loop_config, ctx)


def _train_trial(
    config: dict[str, Any], *, base: dict[str, Any], held: dict[str, list[Any]], datasets: dict[str, Any], cpus: float
) -> None:
    """One trial on big data: launch a Ray Train run; its reports become the trial's reports.

    ``held``: the splits each worker holds whole, split once for every trial (``split_for_workers``:
    trials differ in model settings, never in their workers); ``datasets`` stream."""
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = Spec.model_validate(base["spec"])
    family = get_family(base["family"])
    trial_spec = family.with_trial(spec, config)
    workers, cpus_each = worker_resources(trial_spec, cpus)
    trainer = family.trainer(
        train_worker,
        train_loop_config={
            **base,
            "spec": trial_spec.model_dump(mode="json"),
            "worker_cpus": max(1, int(cpus_each)),
            "held_splits": held,
        },
        scaling_config=scaling_config(trial_spec, workers, cpus_each),
        run_config=ray.train.RunConfig(
            storage_path=runtime.storage_path(),
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]
            # Named after the trial: when a restored search restarts the trial, Ray Train
            # restores this run from its latest checkpoint.
            name=trial_run_name(),
            failure_config=failure_config(trial_spec),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        # TuneReportCallback forwards metrics only: hand Tune the final model as the trial's checkpoint.
        import ray.tune

        ray.tune.report(dict(result.metrics or {}), checkpoint=result.checkpoint)


def trial_run_name(trial_id: str | None = None) -> str:
    """The Ray Train run of a trial (this process's trial unless ``trial_id`` names one)."""
    if trial_id is None:
        import ray.tune

        trial_id = ray.tune.get_context().get_trial_id()
    return f"trial-{trial_id}"


def trial_concurrency(spec: Spec, resources: runtime.Resources, local: bool) -> tuple[int, float]:
    """(trials at once, CPUs per trial) so trials never oversubscribe the cores or starve Ray Data."""
    total_cpus = resources.cpus
    workers = spec.scaling.workers
    if spec.tune.max_concurrent != "auto":
        at_once = min(spec.tune.num_samples, int(spec.tune.max_concurrent))
    elif local:
        at_once = min(spec.tune.num_samples, max(1, int(total_cpus)))
    else:
        at_once = max(1, min(spec.tune.num_samples, int((total_cpus - runtime.data_reserve(total_cpus)) // workers)))
    if spec.scaling.use_gpu and resources.gpus > 0:
        # Trials beyond the GPUs would wait anyway; counting them would shrink every trial's CPUs.
        at_once = max(1, min(at_once, int(resources.gpus // (workers * spec.scaling.gpus_per_worker))))
    return at_once, (total_cpus / at_once if local else 0.0)


def _scheduler(spec: Spec, family: Family) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.tune.scheduler == "fifo":
        return FIFOScheduler()
    # One more than the reports: a trial on Ray Train reports its model's checkpoint once more after
    # its last forwarded report, and a trial at max_t is stopped before it could.
    max_t = family.reports(spec) + 1
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=1, reduction_factor=2)


class _Progress(Callback):  # type: ignore[misc]
    """A Tune callback forwarding trial results to the CLI's progress line."""

    def __init__(self, on_report: ProgressFn) -> None:
        self.on_report: ProgressFn | None = on_report

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the CLI's display can't be.
        return {"on_report": None}

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if self.on_report is None:
            return
        done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
        self.on_report({**{k: v for k, v in result.items() if isinstance(v, int | float)}, "trials_done": done})


def tune(
    spec: Spec,
    *,
    on_report: ProgressFn | None = None,
    registry: Registry | None = None,
    resume: bool = False,
    notice: NoticeFn | None = None,
) -> TuneResult:
    """Run the spec's search; register the tune run, every trial, and the best trial's checkpoint.

    ``resume``: restore the interrupted search of the same spec and finish its trials; with
    none, say so (``notice``, else the log) and search from the beginning.
    """
    from ray import tune as ray_tune

    start = time.perf_counter()
    family, kind = plugs(spec)
    space = search_space(spec, family)
    require_gpus(spec)
    if os.environ.get("RAYLINE_VERBOSE") != "1":
        # Tune's rich console tables would interleave with rayline's own progress line.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's default loggers include TensorBoardX, whose import alone costs seconds of every
    # search; the CSV and JSON loggers (what the results' metrics history is read from) are kept.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    registry = registry or open_registry()
    # Importing mlflow and opening the store take seconds: do it while the trials run.
    warm = threading.Thread(target=lambda: registry.client, name="rayline-registry-warmup", daemon=True)
    warm.start()
    local = trains_in_process(spec, kind)
    resources = runtime.init()
    if not local:
        worker_resources(spec, resources.cpus)  # workers no node can hold: say so before reading data
    runtime.require_shared_storage()  # trials' checkpoints, in process or not, go to storage
    data = prepare(spec, family, kind, in_process=local)
    at_once, cpus_per_trial = trial_concurrency(spec, resources, local)
    # Trials (and the Train workers of big-data trials) send heartbeats; a silent search fails.
    with watch("the search", spec.train.stall_timeout_s, "train.stall_timeout_s") as stall:
        data.config["progress"] = stall.board
        if local:
            trainable = ray_tune.with_parameters(
                _local_trial, base=data.config, frames=data.frames, cpus=max(1, int(cpus_per_trial))
            )
            trial_resources = {"cpu": cpus_per_trial}
            if spec.scaling.use_gpu:  # the loop runs in the trial's own process: it holds the GPU
                trial_resources["gpu"] = spec.scaling.gpus_per_worker
            trainable = ray_tune.with_resources(trainable, trial_resources)
        else:
            # Each trial's Train run sizes its workers from its share of the CPUs, not from all of
            # them: trials sized for the whole cluster could only run one at a time.
            reserve = runtime.data_reserve(resources.cpus)
            share = reserve + max(0.1, resources.cpus - reserve) / at_once
            held, streamed = split_for_workers(data.datasets, worker_resources(spec, share)[0])
            trainable = ray_tune.with_parameters(
                _train_trial, base=data.config, held=held, datasets=streamed, cpus=share
            )
            # The trial only launches a Train run (whose workers hold the CPUs); Tune needs a nonzero bundle.
            trainable = ray_tune.with_resources(trainable, {"cpu": 0.01})
        name = search_key(spec)
        path = storage_folder(name)
        resumed = resume and ray_tune.Tuner.can_restore(path)
        if resume:
            (notice or log.warning)(
                f"resuming the search of {spec.name} where it was interrupted"
                if resumed
                else f"nothing to resume for {spec.name} (spec hash {spec.fingerprint()}): searching from the start"
            )
        if resumed:
            tuner = _restored(path, trainable, on_report)
        else:
            clear_storage(name)  # an old search's state
            tuner = ray_tune.Tuner(
                trainable,
                param_space=space,
                tune_config=ray_tune.TuneConfig(
                    metric=spec.metric,
                    mode=spec.mode,
                    num_samples=spec.tune.num_samples,
                    max_concurrent_trials=at_once,
                    scheduler=_scheduler(spec, family),
                    time_budget_s=spec.train.timeout_s,
                    # A new actor per trial costs a process start and imports; reuse them across trials.
                    reuse_actors=True,
                ),
                run_config=ray_tune.RunConfig(
                    name=name,
                    storage_path=runtime.storage_path(),
                    verbose=0,
                    callbacks=[
                        CSVLoggerCallback(),
                        JsonLoggerCallback(),
                        *([_Progress(on_report)] if on_report else []),
                    ],
                ),
            )
        try:
            grid = tuner.fit()
        except Exception as err:
            if stall.message is not None:
                raise  # the watch says why
            raise map_error(err, during="tuning") from None
    data.config.pop("progress")  # the board is gone with the watch
    if grid.num_errors == len(grid):
        first = next((grid[i].error for i in range(len(grid)) if grid[i].error is not None), None)
        raise TrainError(f"every tune trial failed; first error: {root_cause(first) if first else 'unknown'}")
    try:
        best = grid.get_best_result(metric=spec.metric, mode=spec.mode)
    except RuntimeError as err:
        raise TrainError(f"no trial reported metric {spec.metric!r}: {err}") from None
    log.info("tune: %.1f s to the end of the search", time.perf_counter() - start)
    warm.join()
    result = register(spec, family, data, grid, best, registry, time.perf_counter() - start)
    result.resumed = resumed
    # Registered: a later --resume must not register this search a second time; the trials' own
    # Ray Train runs (the big-data path) go with it.
    clear_storage(name)
    for trial_id in {(grid[i].metrics or {}).get("trial_id") for i in range(len(grid))} - {None}:
        clear_storage(trial_run_name(trial_id))
    return result


def _restored(path: str, trainable: Any, on_report: ProgressFn | None) -> Any:
    """The interrupted search at ``path``, its unfinished trials to go on from their checkpoints.

    Errored trials stay errored (their error is a result, registered as a failed trial).
    """
    from ray import tune as ray_tune

    tuner = ray_tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    # The progress callback was restored from the pickled state without the CLI's display
    # (see _Progress.__getstate__); hand it this process's. Best effort: a private attribute.
    run_config = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", lambda: None)()
    for callback in getattr(run_config, "callbacks", None) or []:
        if isinstance(callback, _Progress):
            callback.on_report = on_report
    return tuner
