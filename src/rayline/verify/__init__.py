"""``rayline verify``: the same rows through every way of asking a model, the same answers or the
first row that differs.

The paths: batch prediction in this process (the reference) and on a Ray Data actor pool,
``POST /predict``, the Open Inference Protocol over REST and gRPC (a real service, started here
on the embedded Ray with a free port for each) and the run's MLflow model through
``mlflow.pyfunc.load_model``. Each path's answer is brought to one shape (``verify.paths``) and
compared with the reference: labels exactly, probabilities and predictions to ``tolerance``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline import runtime
from rayline.errors import RaylineError, SpecError
from rayline.registry import Registry, open_registry
from rayline.spec import Spec
from rayline.stages.predict import ResolvedModel, resolve_model
from rayline.verify import paths as ways
from rayline.verify import rows as sample

__all__ = ["PATHS", "Difference", "PathResult", "Verification", "verify"]

# Every path by its --path name, in the order they are reported; "local" is the reference.
PATHS = {
    "local": "in process",
    "pool": "Ray Data pool",
    "http": "HTTP /predict",
    "rest": "OIP REST",
    "grpc": "OIP gRPC",
    "mlflow": "MLflow pyfunc",
}
SERVED = ("http", "rest", "grpc")
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Difference:
    """Where a path first answers otherwise than the reference (in process)."""

    path: str
    row: int
    column: str
    expected: Any
    got: Any

    def __str__(self) -> str:
        return f"{self.path} differs at row {self.row}, {self.column}: {self.got!r} (in process: {self.expected!r})"


@dataclass
class PathResult:
    path: str  # the display name (PATHS' values)
    rows: int
    max_diff: float | None  # None: skipped, failed, or labels differ
    seconds: float
    note: str = ""  # why skipped or failed; "labels differ"


@dataclass
class Verification:
    model_run_id: str
    rows: int
    tolerance: float
    paths: list[PathResult]
    difference: Difference | None = None  # the first path (in PATHS' order) that differs
    failure: str | None = None  # the first path that could not answer: "<path>: <why>"
    skipped_images: int = 0  # undecodable validation images left out (data.on_bad_file: skip)

    @property
    def ok(self) -> bool:
        return self.difference is None and self.failure is None


def compare(path: str, expected: pd.DataFrame, got: pd.DataFrame, tolerance: float) -> tuple[float, Difference | None]:
    """The largest absolute difference of the numbers, and the first row (then column) that differs."""
    first: Difference | None = None

    def note(row: int, column: str, want: Any, have: Any) -> None:
        nonlocal first
        if first is None or row < first.row:
            first = Difference(path, row, column, want, have)

    missing = expected.index.difference(got.index)
    if len(missing):
        note(int(missing[0]), "the row", "answered", "missing")
    extra = got.index.difference(expected.index)
    if len(extra):
        note(int(extra[0]), "the row", "no such row", "answered")
    common = expected.index.intersection(got.index)
    worst = 0.0
    for column in expected.columns:
        if column not in got.columns:
            note(int(common[0]) if len(common) else 0, column, "a value", "no such column")
            continue
        want, have = expected.loc[common, column], got.loc[common, column]
        if column == "label":
            bad = np.flatnonzero(want.to_numpy() != have.to_numpy())
        else:
            a, b = want.to_numpy(dtype=np.float64), have.to_numpy(dtype=np.float64)
            gap = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
            gap = np.where(np.isnan(gap), np.inf, gap)  # NaN on one side only
            worst = max(worst, float(gap.max(initial=0.0)))
            bad = np.flatnonzero(gap > tolerance)
        if len(bad):
            row = int(common[bad[0]])
            note(row, column, _plain(want.loc[row]), _plain(have.loc[row]))
    return worst, first


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _serving_spec(spec: Spec) -> Spec:
    """The spec as verify serves it: one replica on free loopback ports (HTTP and gRPC), the
    served model answering every request (no canary, no shadow), no API key (the service is
    this process's own, on loopback), float32 as the other paths."""
    update: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": 0,
        "num_replicas": 1,
        "autoscaling": None,
        "canary": None,
        "shadow": None,
        "api_key_env": None,
        "api_key_file": None,
        "precision": "float32",
    }
    if "capture" in type(spec.serve).model_fields:
        update["capture"] = None  # verify's requests are not traffic
    return spec.model_copy(update={"serve": spec.serve.model_copy(update=update)})


def verify(
    spec: Spec,
    *,
    model: str = "best",
    rows: int = 200,
    paths: Sequence[str] | None = None,
    tolerance: float = TOLERANCE,
    registry: Registry | None = None,
    on_path: Callable[[str], None] | None = None,
) -> Verification:
    """The first ``rows`` validation rows through ``paths`` (default: all of ``PATHS``; the
    in-process path always runs, as the reference); ``on_path`` is told each path as it starts."""
    if rows < 1:
        raise SpecError(f"--rows {rows}: must be 1 or more")
    chosen = list(PATHS) if not paths else ["local", *[p for p in paths if p != "local"]]
    unknown = [p for p in chosen if p not in PATHS]
    if unknown:
        raise SpecError(f"--path {unknown[0]!r}: expected one of {', '.join(PATHS)}")
    if runtime.cluster_address() is not None and any(p in SERVED for p in chosen):
        raise SpecError(
            "rayline verify serves the model on the embedded Ray (free local ports); RAY_ADDRESS is set",
            hint="unset RAY_ADDRESS, or pass --path local --path pool --path mlflow",
        )
    spec = spec.model_copy(update={"predict": spec.predict.model_copy(update={"precision": "float32"})})
    registry = registry or open_registry()
    m = resolve_model(spec, model, registry, local=True)  # the lookup alone starts no Ray
    folder = Path(tempfile.mkdtemp(prefix="rayline-verify-"))
    try:
        chosen_rows = sample.select(spec, m, rows, folder)
        answers, results = _run_paths(spec, m, chosen_rows, chosen, folder, registry, on_path or (lambda _: None))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _judge(m, chosen_rows, answers, results, tolerance)


def _run_paths(
    spec: Spec,
    m: ResolvedModel,
    rows: sample.Rows,
    chosen: list[str],
    folder: Path,
    registry: Registry,
    on_path: Callable[[str], None],
) -> tuple[dict[str, pd.DataFrame | None], dict[str, tuple[float, str]]]:
    """Each chosen path's answer (None: skipped or failed) and (seconds, note)."""
    answers: dict[str, pd.DataFrame | None] = {}
    results: dict[str, tuple[float, str]] = {}

    def run(key: str, fn: Callable[[], pd.DataFrame | None]) -> None:
        on_path(PATHS[key])
        start = time.perf_counter()
        try:
            answers[key] = fn()
            note = "" if answers[key] is not None else "skipped: the run has no MLflow model (logged before them)"
        except RaylineError as err:
            if key == "local":
                raise  # no reference: the error is verify's
            answers[key], note = None, f"failed: {err}"
        results[key] = (time.perf_counter() - start, note)

    run("local", lambda: ways.batch(spec, m, rows, "local", folder / "local.parquet", registry))
    if "pool" in chosen:
        run("pool", lambda: ways.batch(spec, m, rows, "ray", folder / "pool.parquet", registry))
    if any(p in chosen for p in SERVED):
        _run_served(spec, m, rows, chosen, registry, run)
    if "mlflow" in chosen:
        run("mlflow", lambda: ways.mlflow_pyfunc(m, rows))
    return answers, results


def _run_served(
    spec: Spec,
    m: ResolvedModel,
    rows: sample.Rows,
    chosen: list[str],
    registry: Registry,
    run: Callable[[str, Callable[[], pd.DataFrame | None]], None],
) -> None:
    """One service for the HTTP and protocol paths; stopped after (Serve too, when verify started it)."""
    from rayline.serving.runner import start

    service = start(_serving_spec(spec), model=m.record.run_id, registry=registry)
    try:
        if "http" in chosen:
            run("http", lambda: ways.predict_http(service.url, m, rows))
        if "rest" in chosen:
            run("rest", lambda: ways.oip_rest(service.url, spec.name, m, rows))
        if "grpc" in chosen:
            assert service.grpc_address is not None
            run("grpc", lambda: ways.oip_grpc(service.grpc_address or "", spec.name, m, rows))
    finally:
        service.stop()  # and Serve, when it started it: its ports and the replica's CPUs are free again


def _judge(
    m: ResolvedModel,
    rows: sample.Rows,
    answers: dict[str, pd.DataFrame | None],
    results: dict[str, tuple[float, str]],
    tolerance: float,
) -> Verification:
    reference = answers["local"]
    assert reference is not None
    expected = pd.RangeIndex(len(rows))
    verdict = Verification(m.record.run_id, len(rows), tolerance, [], skipped_images=len(rows.skipped))
    missing = expected.difference(reference.index)
    if len(missing):  # the reference itself lost a row: every comparison would be with nothing
        verdict.failure = f"in process: row {int(missing[0])} has no answer"
    for key, (seconds, note) in results.items():
        got = answers[key]
        if got is None:
            verdict.paths.append(PathResult(PATHS[key], 0, None, seconds, note))
            if note.startswith("failed") and verdict.failure is None:
                verdict.failure = f"{PATHS[key]}: {note.removeprefix('failed: ')}"
            continue
        if key not in ("local", "pool"):
            got = got.set_axis(pd.RangeIndex(len(got)))  # served and MLflow answers come in request order
        worst, difference = compare(PATHS[key], reference, got, tolerance)
        labels = difference is not None and difference.column == "label"
        verdict.paths.append(PathResult(PATHS[key], len(got), worst, seconds, "labels differ" if labels else ""))
        if difference is not None and verdict.difference is None:
            verdict.difference = difference
    return verdict
