"""Batch inference: a callable predictor class on a Ray Data actor pool, written as parquet.

The model loads once per actor (``__init__``) and is reused for every batch (``__call__``),
the course's lesson-4 pattern. Output keeps the input columns and adds the family's columns
(probability, predicted_label, ...). It is written to a temporary folder and renamed when done.
"""

from __future__ import annotations

import gc
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from rayline import checkpoints, runtime
from rayline.atomic import atomic_output
from rayline.errors import DataError, TrainError
from rayline.families.base import Family, get_family
from rayline.registry import Registry, RunRecord, open_registry
from rayline.spec import Spec

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
    ) -> None:
        self.predictor = get_family(family).load(checkpoints.local_folder(checkpoint), cpus=cpus, precision=precision)
        self.drop = list(drop)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        outputs = self.predictor.predict(batch)
        outputs.index = batch.index
        # Pixels are not written back out: the output names each image by its path (or key).
        return pd.concat([batch.drop(columns=self.drop), outputs], axis=1)


@dataclass
class PredictResult:
    run_id: str
    model_run_id: str
    output: Path
    rows: int
    seconds: float
    engine: str = "ray"  # "local": in this process; "ray": a Ray Data actor pool


def resolve_model(spec: Spec, model: str, registry: Registry) -> tuple[RunRecord, Family, Path]:
    record = registry.resolve(spec.name, model, metric=spec.metric, mode=spec.mode)
    return record, get_family(record.family), registry.checkpoint_dir(record.run_id)


def input_dataset(
    spec: Spec, family: Family, source: str | None, checkpoint: Path, *, label: str | None = None
) -> ray.data.Dataset:
    """The rows to predict with ``checkpoint``: ``source``, or else the validation split of the spec's data.

    Images are decoded at the model's input size whatever size the files are. A table's columns
    (the model's features, and ``label`` when given) are checked here, on the file's schema:
    after a ``map_batches``, asking for the schema would run the pipeline's first block.
    """
    from rayline import data as tables
    from rayline.prepare import _SplitFilter

    if family.data_kind == "images":
        return _image_input(spec, source, image_size(checkpoint))
    if source is not None:
        path = source
        if "://" not in path and not Path(path).exists():
            raise DataError(f"--input {path} does not exist")
        ds = tables.read_ray(path, tables.table_format(path, "auto"))
        check_input_columns(ds.schema().names, checkpoint, label)
        return ds
    path = tables.resolve_source(spec)
    ds = tables.read_ray(path, tables.table_format(path, spec.data.format))
    # Hash the rows on the columns training hashed (features, then label): hashing every column
    # in file order picks other rows whenever the label is not last or data.features is a subset.
    schema = ds.schema().base_schema
    features, spec_label = tables.check_schema(schema, spec, path)
    if label is not None and label not in schema.names:
        raise DataError(f"{path}: no label column {label!r}, which the model was trained on")
    return ds.map_batches(
        _SplitFilter([*features, spec_label], spec.split.valid_fraction, spec.split.seed, valid=True, keep_all=True),
        batch_format="pandas",
    )


def _image_input(spec: Spec, source: str | None, size: tuple[int, int] | None) -> ray.data.Dataset:
    from rayline import data as tables
    from rayline import images

    if source is not None:
        if "://" not in source and not Path(source).exists():
            raise DataError(f"--input {source} does not exist")
        only_files = spec.model_copy(
            update={"data": spec.data.model_copy(update={"format": "auto", "shuffle": "none"})}
        )
        return images.read_ray(only_files, source, size=size)[0]
    ds, _ = images.read_ray(spec, tables.resolve_source(spec), size=size)
    return ds.map_batches(
        images.SplitFilter(spec.split.valid_fraction, spec.split.seed, valid=True), batch_format="pandas"
    )


def check_input_columns(names: list[str], checkpoint: Path, label: str | None) -> None:
    """An ``--input`` table has the model's features (and ``label``, to evaluate with)."""
    layout = _layout(checkpoint)
    needed = layout.features if layout is not None else []
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"input: column {missing[0]!r} is missing; the model needs {', '.join(needed)}")
    if label is not None and label not in names:
        raise DataError(f"evaluation input has no label column {label!r}")


def require_gpus(spec: Spec) -> None:
    """``predict.num_gpus`` for each of the pool's (first) actors must exist on the embedded Ray."""
    pool, share = spec.predict.concurrency, spec.predict.num_gpus
    actors = pool if isinstance(pool, int) else pool[0]
    runtime.require_gpus(actors * share, f"predict.num_gpus={share:g} x {actors} actor(s)")


def predictions(spec: Spec, family: Family, checkpoint: Path, ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds`` (from ``input_dataset``) with the family's prediction columns, computed on an actor pool."""
    import ray
    import ray.data

    pool = spec.predict.concurrency
    largest = pool if isinstance(pool, int) else pool[1]
    # Size by what is free now (a Serve app may hold CPUs): a pool that takes the CPU Ray Data's
    # read tasks need would wait forever.
    free = min(ray.cluster_resources().get("CPU", 1.0), ray.available_resources().get("CPU", 0.0))
    num_cpus = runtime.cpus_per_actor(free, spec.predict.num_cpus, largest)
    threads = max(1, round(num_cpus))
    if runtime.cluster_address() is None:
        # Ray's CPU count is a reservation (one is left for the read tasks); the model may still
        # use this machine's cores between them: the decode work is small next to the forward pass.
        threads = max(threads, runtime.local_cpus() // largest)
    compute = (
        ray.data.ActorPoolStrategy(size=pool)
        if isinstance(pool, int)
        else ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1])
    )
    return ds.map_batches(
        BatchPredictor,
        fn_constructor_kwargs={
            "family": family.name,
            "checkpoint": checkpoints.portable(checkpoint),
            "cpus": threads,
            "drop": ("image",) if family.data_kind == "images" else (),
            "precision": spec.predict.precision,
        },
        compute=compute,
        batch_size=spec.predict.batch_size or family.predict_batch_size,
        # With a GPU share Ray Data reserves 1 CPU per actor itself, and warns that naming both
        # is "experimental": name the CPUs only when they differ from that.
        num_cpus=None if spec.predict.num_gpus and num_cpus == 1.0 else num_cpus,
        num_gpus=spec.predict.num_gpus or None,
        batch_format="pandas",
    )


def _layout(checkpoint: Path) -> Any:
    import json

    from rayline.data import TableLayout

    meta = checkpoint / "meta.json"
    if not meta.is_file():
        return None
    content = json.loads(meta.read_text())
    if "images" in content:
        # An image classifier seen as a table: the pixels are its one feature, the folder its label.
        classes = [str(c) for c in content["images"]["classes"]]
        return TableLayout(features=["image"], label="label", task="multiclass", classes=classes)
    raw = content.get("layout")
    return TableLayout.from_dict(raw) if raw else None


def image_size(checkpoint: Path) -> tuple[int, int] | None:
    import json

    meta = checkpoint / "meta.json"
    raw = json.loads(meta.read_text()).get("images") if meta.is_file() else None
    return (int(raw["size"][0]), int(raw["size"][1])) if raw else None


def default_output(spec: Spec, run_id: str) -> Path:
    return runtime.home() / "predictions" / spec.name / f"{run_id}.parquet"


def predict(
    spec: Spec,
    *,
    model: str = "best",
    input: str | None = None,
    output: str | None = None,
    registry: Registry | None = None,
) -> PredictResult:
    """Predict every input row with a registered model; write parquet; register the job."""
    from rayline import local_inference

    start = time.perf_counter()
    require_gpus(spec)
    registry = registry or open_registry()
    source = input or spec.predict.input
    local = local_inference.wants_local(spec, get_family(spec.model.family), source)
    if local:
        record, family, checkpoint = resolve_model(spec, model, registry)
    else:
        record, family, checkpoint = runtime.init_while(partial(resolve_model, spec, model, registry))
    target = Path(output or spec.predict.output or default_output(spec, record.run_id))
    write = local_inference.write_predictions if local else _write_on_pool
    with atomic_output(target) as tmp:
        run_pipeline(partial(write, spec, family, checkpoint, source, tmp), spec.predict.timeout_s, "batch inference")
    import pyarrow.dataset as pads

    rows = pads.dataset(str(target), format="parquet").count_rows()
    seconds = time.perf_counter() - start
    with registry.start_run(
        spec.name,
        kind="predict",
        family=family.name,
        parent_id=record.run_id,
        tags={"rayline.model_run": record.run_id},
    ) as run:
        engine = "local" if local else "ray"
        run.log_params({"input": source or "valid split", "output": str(target), "engine": engine})
        run.log_metrics({"rows": rows, "time_total_s": seconds, "rows_per_s": rows / max(seconds, 1e-9)})
    return PredictResult(run.run_id, record.run_id, target, rows, seconds, engine)


def _write_on_pool(spec: Spec, family: Family, checkpoint: Path, source: str | None, target: Path) -> None:
    predictions(spec, family, checkpoint, input_dataset(spec, family, source, checkpoint)).write_parquet(str(target))


def run_pipeline(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run ``fn`` (which builds and runs a Ray Data pipeline) with a deadline; errors become rayline's.

    A failed pipeline's actors, with the CPUs they hold, live as long as its Dataset does, and
    its exception's frames reference it: a caller that kept the error (a notebook,
    ``pytest.raises``) left the next pipeline in the process waiting for CPUs forever. So the
    Dataset lives only in ``fn``'s frames, the error raised here carries only the message, and
    the old frames are collected before it is raised.
    """
    try:
        return runtime.call_with_timeout(fn, timeout_s, what)
    except Exception as err:
        failure = _detached(err)
    gc.collect()
    raise failure


def _detached(err: Exception) -> Exception:
    """``err`` as a fresh rayline error with no traceback: rayline's own errors keep their type
    and message (a worker's, which Ray wraps in its own type, is read by ``_map_error``)."""
    if isinstance(err, DataError | TrainError) and type(err).__module__ == "rayline.errors":
        return type(err)(err.message, hint=err.hint)
    return _map_error(err)


# "ValueError: ..." or "rayline.errors.DataError: ..." in the text of a worker's traceback.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception)): (.+)$")


def _map_error(err: BaseException) -> Exception:
    """Ray wraps a worker's exception; surface rayline's own errors with their message."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, DataError):
            return DataError(cause.message, hint=cause.hint)
        cause = cause.__cause__
    # Ray Data passes the worker's exception on as text, ending in its own retry advice: report
    # the last exception line that is not Ray's own (what the model code actually raised).
    lines = [line.strip() for line in str(err).splitlines()]
    found = [m for m in map(_EXCEPTION_LINE.match, lines) if m is not None and not m.group(0).startswith("ray.")]
    if found:
        name, message = found[-1].groups()
        if name == "DataError":
            return DataError(message)
        return TrainError(f"batch inference failed: {name}: {message}"[:400])
    text = str(err).strip().splitlines()
    return TrainError(f"batch inference failed: {text[-1] if text else type(err).__name__}"[:400])
