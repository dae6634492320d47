"""The lifecycle commands: init, validate, train, tune, run, report, predict, evaluate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from rayline.cli.shared import ModelOpt, SetOpt, SpecArg, err, out
from rayline.errors import SpecError
from rayline.progress import progress_status

if TYPE_CHECKING:
    from rayline.spec import Spec


def validate(spec: SpecArg, set_: SetOpt = None) -> None:
    """Check a spec and print it with every default filled in."""
    import yaml

    from rayline.spec import load_spec

    loaded = load_spec(spec, set_ or [])
    out.print(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False).rstrip())
    err.print(f"{spec}: valid (spec hash {loaded.fingerprint()})")


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


def _input_opt(rows: str) -> Any:
    """``--input`` of predict and evaluate: other rows than the spec's validation split."""
    return typer.Option("--input", help=f"{rows} (default: the validation split)")


def predict_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    input_path: Annotated[str | None, _input_opt("rows to predict")] = None,
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


def evaluate_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    input_path: Annotated[str | None, _input_opt("labelled rows")] = None,
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
