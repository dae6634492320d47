"""``rayline runs list|show`` and ``rayline models list``: what the registry (MLflow) holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from rayline.cli.shared import out
from rayline.errors import SpecError


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
