"""Traffic against a model: drift (new rows against the training profile), replay (captured
traffic scored by a candidate) and promote (an alias moved, weighing a replay's evidence)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rayline.cli.shared import SetOpt, SpecArg, err, out
from rayline.progress import progress_status

DRIFT_EXIT = 3  # drift found: not an error of the command, a result a script can branch on


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
