"""Batch inference: the family's predictor over the data kind's rows, written as parquet.

Two engines, one predictor. A table is predicted part by part (``rayline.stages.parts``): read
as Arrow batches, predicted on the scaled matrix, written one part file at a time, so memory
holds a batch, a killed job resumes (``--resume``) and bad rows can be set aside
(``predict.on_bad_row``); in this process, or on a Ray Data actor pool whose actors read and
write their parts. Other data (image folders) goes through pandas batches: in this process for
modest local inputs, else through a Ray Data pipeline whose actor pool loads the model once per
actor (``__init__``) and reuses it for every batch (``__call__``), the course's lesson-4
pattern. The output keeps the input columns (less the pixels) and adds the family's columns
(probability, predicted_label, ...); it is renamed into place when done.
"""

from __future__ import annotations

import gc
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from rayline import checkpoints, runtime
from rayline.atomic import atomic_output
from rayline.data import DataKind, get_kind
from rayline.errors import DataError, SpecError, map_error
from rayline.families import Family, get_family
from rayline.registry import Registry, RunRecord, open_registry
from rayline.spec import Spec
from rayline.stages import parts
from rayline.stages.engine import plugs, predicts_in_process
from rayline.stages.heartbeat import Pulse, watch

if TYPE_CHECKING:
    import ray.data

T = TypeVar("T")

# A one-file table is one block, so a pool of two actors gets one input; that is fine, not a problem.
warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")


class BatchPredictor:
    """Loads a checkpoint once per actor; maps pandas batches to batches with prediction columns."""

    def __init__(
        self,
        family: str,
        checkpoint: checkpoints.Portable,
        cpus: int,
        drop: tuple[str, ...] = (),
        precision: str = "float32",
        progress: Any | None = None,
    ) -> None:
        self.pulse = Pulse(progress)
        self.pulse.beat("an actor loading the model")
        self.predictor = get_family(family).load(checkpoints.local_folder(checkpoint), cpus=cpus, precision=precision)
        self.drop = list(drop)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.pulse.beat("a batch predicted")
        outputs = self.predictor.predict(batch)
        if len(outputs) != len(batch):
            raise RuntimeError(f"the predictor returned {len(outputs)} rows for a batch of {len(batch)}")
        outputs.index = batch.index
        return pd.concat([batch.drop(columns=self.drop), outputs], axis=1)


@dataclass
class PredictResult:
    run_id: str
    model_run_id: str
    output: Path
    rows: int
    seconds: float
    engine: str = "ray"  # "local": in this process; "ray": a Ray Data actor pool
    bad_rows: int = 0  # rows predict.on_bad_row skipped or quarantined
    quarantine: Path | None = None  # where quarantined rows were written


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model, resolved: its run, plugs, local checkpoint folder and ``meta.json``."""

    record: RunRecord
    family: Family
    kind: DataKind
    checkpoint: Path
    meta: dict[str, Any]

    def local_predictor(self, precision: str) -> BatchPredictor:
        """The model loaded in this process, on the cores this process may use."""
        return BatchPredictor(
            self.family.name,
            str(self.checkpoint),
            cpus=runtime.local_cpus(),
            drop=self.kind.output_drop,
            precision=precision,
        )


def model_of(record: RunRecord, registry: Registry) -> ResolvedModel:
    """A registered run's model, with its checkpoint fetched to a local folder."""
    family = get_family(record.family)
    folder = registry.checkpoint_dir(record.run_id)
    return ResolvedModel(record, family, get_kind(family.data_kind), folder, checkpoints.read_meta(folder))


def resolve_model(spec: Spec, model: str, registry: Registry, *, local: bool) -> ResolvedModel:
    """``model`` (best, latest, a run id...) of the spec, resolved; unless the job runs in this
    process (``local``), Ray starts meanwhile (see ``runtime.init_while``)."""

    def resolve() -> ResolvedModel:
        return model_of(registry.resolve(spec.name, model, metric=spec.metric, mode=spec.mode), registry)

    return resolve() if local else runtime.init_while(resolve)


def require_gpus(spec: Spec) -> None:
    """``predict.num_gpus`` for each of the pool's (first) actors must exist on the embedded Ray."""
    pool, share = spec.predict.concurrency, spec.predict.num_gpus
    actors = pool if isinstance(pool, int) else pool[0]
    runtime.require_gpus(actors * share, f"predict.num_gpus={share:g} x {actors} actor(s)")


def _batch_size(spec: Spec, m: ResolvedModel) -> int:
    # What bounds the model's memory per call, on either engine.
    return spec.predict.batch_size or m.family.predict_batch_size


def local_predictions(
    spec: Spec, m: ResolvedModel, source: str | None, *, label: str | None = None
) -> Iterator[pd.DataFrame]:
    """The input's rows in batches, each with the family's prediction columns, computed here."""
    predictor = m.local_predictor(spec.predict.precision)
    for chunk in m.kind.local_batches(spec, m.meta, source, _batch_size(spec, m), label=label):
        if not chunk.empty:
            yield predictor(chunk.reset_index(drop=True))


def pool_predictions(spec: Spec, m: ResolvedModel, ds: ray.data.Dataset, progress: Any | None) -> ray.data.Dataset:
    """``ds`` with the family's prediction columns, computed on a Ray Data actor pool whose actors
    beat ``progress`` (a ``watch`` board)."""
    import ray
    import ray.data

    pool = spec.predict.concurrency
    largest = pool if isinstance(pool, int) else pool[1]
    if runtime.cluster_address() is not None and (node := runtime.largest_node_cpus() or 0.0) < 2:
        # Measured on 2 nodes of 1 CPU: the pool's actors and Ray Data's listing task take every
        # CPU, the read tasks wait for one, and the pipeline waits forever.
        raise SpecError(
            f"predict.engine=ray needs a Ray node with 2 CPUs (the largest has {node:g}): on smaller "
            "nodes the prediction actors and Ray Data's read tasks wait on each other",
            hint="set predict.engine=local, or add nodes of 2 or more CPUs",
        )
    # Size by what is free now (a Serve app may hold CPUs): a pool that takes the CPU Ray Data's
    # read tasks need would wait forever.
    free = min(ray.cluster_resources().get("CPU", 1.0), ray.available_resources().get("CPU", 0.0))
    num_cpus = runtime.cpus_per_actor(free, spec.predict.num_cpus, largest)
    threads = max(1, round(num_cpus))
    if runtime.cluster_address() is None:
        # Ray's CPU count is a reservation (one is left for the read tasks); the model may still
        # use this machine's cores between them: the decode work is small next to the model's.
        threads = max(threads, runtime.local_cpus() // largest)
    compute = (
        ray.data.ActorPoolStrategy(size=pool)
        if isinstance(pool, int)
        else ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1])
    )
    return ds.map_batches(
        BatchPredictor,
        fn_constructor_kwargs={
            "family": m.family.name,
            "checkpoint": checkpoints.stored(m.checkpoint),
            "cpus": threads,
            "drop": m.kind.output_drop,
            "precision": spec.predict.precision,
            "progress": progress,
        },
        compute=compute,
        batch_size=_batch_size(spec, m),
        # With a GPU share Ray Data reserves 1 CPU per actor itself, and warns that naming both
        # is "experimental": name the CPUs only when they differ from that.
        num_cpus=None if spec.predict.num_gpus and num_cpus == 1.0 else num_cpus,
        num_gpus=spec.predict.num_gpus or None,
        batch_format="pandas",
    )


def default_output(spec: Spec, run_id: str) -> Path:
    return runtime.home() / "predictions" / spec.name / f"{run_id}.parquet"


def write_local(spec: Spec, m: ResolvedModel, source: str | None, target: Path) -> int:
    """Predict every input row in this process; write ``target/part-00000.parquet``; return the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    writer: pq.ParquetWriter | None = None
    target.mkdir(parents=True)
    try:
        for predicted in local_predictions(spec, m, source):
            table = pa.Table.from_pandas(predicted, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(target / "part-00000.parquet", table.schema)
            writer.write_table(table.cast(writer.schema))
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        raise DataError(f"{source or spec.data.source}: no rows to predict")
    return rows


def write_on_pool(spec: Spec, m: ResolvedModel, source: str | None, target: Path, progress: Any) -> None:
    pool_predictions(spec, m, m.kind.ray_input(spec, m.meta, source), progress).write_parquet(str(target))


_OTHER_FORMATS = {".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".xlsx", ".feather", ".arrow", ".orc", ".avro"}


def _check_output_name(name: str | None, field: str) -> None:
    """Predictions are a parquet folder: a name promising another format (out.csv) is refused."""
    suffix = PurePosixPath(name).suffix.lower() if name else ""
    if suffix in _OTHER_FORMATS:
        raise SpecError(
            f"{field} {name!r}: predictions are written as parquet (a folder of part files); "
            "name it .parquet, or give a folder name"
        )


def predict(
    spec: Spec,
    *,
    model: str = "best",
    input: str | None = None,
    output: str | None = None,
    registry: Registry | None = None,
    resume: bool = False,
) -> PredictResult:
    """Predict every input row with a registered model; write parquet; register the job.

    ``resume``: go on from the parts a killed job with the same model, input and policy finished
    (tables; see ``rayline.stages.parts``)."""
    start = time.perf_counter()
    if output:
        _check_output_name(output, "--out")
    else:
        _check_output_name(spec.predict.output, "predict.output")
    require_gpus(spec)
    registry = registry or open_registry()
    source = input or spec.predict.input
    family, kind = plugs(spec)
    by_parts = parts.supports_parts(kind, family)
    if not by_parts and (resume or spec.predict.on_bad_row != "fail"):
        what = "--resume" if resume else f"predict.on_bad_row={spec.predict.on_bad_row}"
        raise SpecError(f"{what} applies to tables; {family.name} predicts {family.data_kind} data")
    local = predicts_in_process(spec, kind, source, streaming=by_parts)
    m = resolve_model(spec, model, registry, local=local)
    target = Path(output or spec.predict.output or default_output(spec, m.record.run_id)).expanduser().resolve()
    bad = 0
    aside: Path | None = None
    if by_parts:
        rows, bad, aside = _predict_parts(spec, m, source, target, local=local, resume=resume)
    else:
        with atomic_output(target, own=("*.parquet",)) as tmp:
            if local:
                run_pipeline(partial(write_local, spec, m, source, tmp), spec, "batch inference")
            else:
                run_pipeline(partial(write_on_pool, spec, m, source, tmp), spec, "batch inference", watched=True)
        import pyarrow.dataset as pads

        rows = pads.dataset(str(target), format="parquet").count_rows()
    seconds = time.perf_counter() - start
    with registry.start_run(
        spec.name,
        kind="predict",
        family=m.family.name,
        parent_id=m.record.run_id,
        tags={"rayline.model_run": m.record.run_id},
    ) as run:
        engine = "local" if local else "ray"
        run.log_params({"input": source or "valid split", "output": str(target), "engine": engine})
        run.log_metrics(
            {"rows": rows, "bad_rows": bad, "time_total_s": seconds, "rows_per_s": rows / max(seconds, 1e-9)}
        )
    return PredictResult(run.run_id, m.record.run_id, target, rows, seconds, engine, bad, aside)


# Rows per Arrow batch on the parts path: a tree model's call costs the same per row from a few
# thousand rows up, but each batch has a fixed cost in Python (measured: docs/benchmarks.md).
MIN_ARROW_BATCH = 65_536


def _predict_parts(
    spec: Spec, m: ResolvedModel, source: str | None, target: Path, *, local: bool, resume: bool
) -> tuple[int, int, Path | None]:
    """Predict part by part into ``.<out>.partial``; rename it into place when every part is
    written. Returns (rows predicted, bad rows, the quarantine file)."""
    policy = spec.predict.on_bad_row
    parts.check_target(target)
    # ``fail`` refuses a column of the wrong type before any work (a CSV's cells are screened one
    # by one); every policy screens the rows, and ``fail`` stops at the first bad one.
    plan = m.kind.plan_parts(spec, m.meta, source, screened=policy != "fail")  # type: ignore[attr-defined]
    key = parts.job_key(m.record.run_id, plan, policy)
    folder, finished = parts.open_folder(target, key, resume)
    todo = [p.index for p in plan if p.index not in finished]
    settings = part_settings(spec, m, plan, folder)
    try:
        if local:
            predictor = parts.PartPredictor(checkpoint=str(m.checkpoint), cpus=runtime.local_cpus(), **settings)
            work = partial(parts.run_local, predictor, todo, folder)
            new = run_pipeline(work, spec, "batch inference")
        else:
            new = run_pipeline(
                partial(_pool_parts, spec, m, todo, folder, settings), spec, "batch inference", watched=True
            )
    except (DataError, SpecError):
        shutil.rmtree(folder, ignore_errors=True)  # the input is at fault: a resume would fail the same
        raise
    done = [*finished.values(), *new]
    rows, bad = sum(d.rows for d in done), sum(d.bad for d in done)
    if rows == 0 and bad == 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise DataError(f"{source or spec.data.source}: no rows to predict")
    return rows, bad, parts.finish(folder, target, quarantine=policy == "quarantine")


def _pool_parts(
    spec: Spec, m: ResolvedModel, todo: list[int], folder: Path, settings: dict[str, Any], progress: Any
) -> list[parts.Done]:
    """The parts in ``todo`` predicted and written on the actor pool, each recorded as it ends."""
    done = []
    for row in pool_over_parts(spec, m, todo, settings, progress):
        finished = parts.Done(int(row["part"]), int(row["rows"]), int(row["bad"]))
        parts.record(folder, finished)
        done.append(finished)
    return done


def pool_over_parts(
    spec: Spec, m: ResolvedModel, todo: list[int], settings: dict[str, Any], progress: Any
) -> Iterator[dict[str, Any]]:
    """``parts.PartPredictor`` over the parts in ``todo`` on a pool of Ray actors: the actors are
    handed part numbers, read their rows, predict and write (or tally) them; only the numbers
    and counts cross the object store. Yields what each part gave, as it ends.

    Plain actors, not a Ray Data pipeline: with no rows to move there is nothing for Ray Data to
    stream, and its executor's start (its helper actors) cost 4 s more than two actors' here.
    An actor is given a part once it is up, and its next part when it returns one, so actors
    a busy cluster never starts hold none (the stall watch names them)."""
    import ray

    if not todo:
        return
    pool = spec.predict.concurrency
    largest = pool if isinstance(pool, int) else pool[1]
    # Size by what is free now (a Serve app may hold CPUs). No read task needs a CPU here: the
    # actors read their parts themselves.
    free = min(ray.cluster_resources().get("CPU", 1.0), ray.available_resources().get("CPU", 0.0))
    num_cpus = runtime.cpus_per_actor(free, spec.predict.num_cpus, largest)
    threads = max(1, round(num_cpus))
    if runtime.cluster_address() is None:
        threads = max(threads, runtime.local_cpus() // largest)
    kwargs = {**settings, "checkpoint": checkpoints.stored(m.checkpoint), "cpus": threads, "progress": progress}
    # SPREAD: on a cluster the pool's actors go to different nodes (their reads and writes too).
    remote = ray.remote(parts.PartPredictor).options(
        num_cpus=num_cpus, num_gpus=spec.predict.num_gpus or None, scheduling_strategy="SPREAD"
    )
    actors: list[Any] = [remote.remote(**kwargs) for _ in range(min(largest, len(todo)))]
    waiting = list(todo)
    running: dict[Any, Any] = {actor.__ray_ready__.remote(): actor for actor in actors}  # ref -> its actor
    try:
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(ref)
            result = ray.get(ref)
            if isinstance(result, parts.Done):
                yield {"part": result.part, "rows": result.rows, "bad": result.bad}
            elif isinstance(result, dict):
                yield result
            if waiting:
                running[actor.run_or_tally.remote(waiting.pop(0))] = actor
    finally:
        for actor in actors:
            ray.kill(actor)


def part_settings(spec: Spec, m: ResolvedModel, plan: list[Any], folder: Path | None) -> dict[str, Any]:
    """``parts.PartPredictor``'s arguments but the checkpoint and threads (they differ by engine)."""
    return {
        "family": m.family.name,
        "kind": m.kind,
        "meta": m.meta,
        "parts": plan,
        "folder": str(folder or ""),
        "batch_rows": max(_batch_size(spec, m), MIN_ARROW_BATCH),
        "on_bad_row": spec.predict.on_bad_row,
        "drop": m.kind.output_drop,
    }


def run_pipeline(fn: Callable[..., T], spec: Spec, what: str, *, watched: bool = False) -> T:
    """Run ``fn`` (which builds and runs a pipeline) with a deadline; errors become rayline's.

    ``watched``: a pipeline on Ray: ``fn`` gets a progress board for its actors, and a pool that
    predicts nothing for ``predict.stall_timeout_s`` fails (workers a busy cluster never starts).

    A failed Ray Data pipeline's actors, with the CPUs they hold, live as long as its Dataset
    does, and its exception's frames reference it: a caller that kept the error (a notebook,
    ``pytest.raises``) left the next pipeline in the process waiting for CPUs forever. So the
    Dataset lives only in ``fn``'s frames, the error raised here carries only the message, and
    the old frames are collected before it is raised.
    """
    try:
        if not watched:
            return runtime.call_with_timeout(fn, spec.predict.timeout_s, what)
        # In this thread: the watch's interrupt stops Ray Data's executor, which then shuts
        # down its actors (a pipeline left running in a thread outlived the error).
        stall_s, total_s = spec.predict.stall_timeout_s, spec.predict.timeout_s
        with watch(what, stall_s, "predict.stall_timeout_s", timeout_s=total_s) as stall:
            return fn(stall.board)
    except Exception as err:
        # rayline's own error keeps its class and text; from a pool's actor it comes as Ray's
        # RayTaskError(DataError), whose __init__ takes the cause only: map_error unwraps it.
        failure = map_error(err, during=what)
    gc.collect()
    raise failure
