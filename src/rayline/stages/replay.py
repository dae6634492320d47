"""Replay: a candidate model scored on the traffic a service captured (``serve.capture``).

``replay(spec, capture=DIR, model=CANDIDATE)`` reads the captured rows answered in one role
(default: the primary's), predicts their inputs with the candidate through batch prediction's
predictor (``rayline.stages.predict.BatchPredictor``: in this process for a capture of modest
size, on the Ray Data actor pool for a big one, on a cluster, or with ``predict.engine=ray``),
and compares its answers with the recorded ones (``rayline.stages.replay_stats``): agreement,
the shift of the predictions' distribution and, with labels joined by a key, each metric's
difference with a bootstrap interval. It writes ``replay.json``, ``report.json``,
``report.html`` and PNGs, and registers a ``replay`` run (tag ``rayline.model_run``: the
candidate) whose ``diff_<metric>_low``/``_high`` metrics ``rayline promote --evidence`` judges.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rayline import runtime
from rayline.atomic import atomic_output
from rayline.data.capture import items_of, outputs_of, read_capture
from rayline.errors import DataError, SpecError
from rayline.registry import Registry, open_registry
from rayline.spec import Spec
from rayline.stages import replay_stats as stats
from rayline.stages.predict import ResolvedModel, pool_predictions, resolve_model, run_pipeline
from rayline.stages.report_plots import Drawn, figure

ROLES = ("primary", "canary", "shadow", "named", "previous")
LOCAL_MAX_ROWS = 1_000_000  # records predicted in this process at most (images: a tenth)
_CHUNK = 10_000  # captured rows decoded and predicted at a time
_ROW = "_replay_row"  # carried through the pool, whose output order is not the input's
TAG_CAPTURE = "rayline.replay.capture"
TAG_RECORDED = "rayline.replay.recorded"


@dataclass(frozen=True)
class ReplayResult:
    run_id: str
    candidate: str
    recorded: list[str]  # the runs that answered the replayed rows
    rows: int
    labelled: int
    agreement: dict[str, float]
    shift: dict[str, stats.Shift]
    differences: dict[str, stats.Difference]
    folder: Path
    engine: str
    seconds: float

    @property
    def report(self) -> Path:
        return self.folder / "report.html"


def _in_process(spec: Spec, rows: int, images: bool) -> bool:
    """``predict.engine``, as batch prediction decides it, with the capture's size for the input's."""
    if spec.predict.engine != "auto":
        return spec.predict.engine == "local"
    if runtime.cluster_address() is not None or spec.predict.num_gpus > 0:
        return False
    return rows <= (LOCAL_MAX_ROWS // 10 if images else LOCAL_MAX_ROWS)


def _frame(items: list[Any], first: int) -> pd.DataFrame:
    """Captured items as batch prediction's rows: records as columns, images as an ``image`` column."""
    if items and isinstance(items[0], np.ndarray):
        frame = pd.DataFrame({"image": pd.Series(items, dtype=object)})
    else:
        frame = pd.DataFrame.from_records(items)
    frame[_ROW] = np.arange(first, first + len(items))
    return frame


def _frames(table: pa.Table) -> list[pd.DataFrame]:
    return [_frame(items_of(table.slice(s, _CHUNK)), s) for s in range(0, table.num_rows, _CHUNK)]


def _predict(spec: Spec, m: ResolvedModel, table: pa.Table, local: bool) -> pd.DataFrame:
    def here() -> pd.DataFrame:
        predictor = m.local_predictor(spec.predict.precision)
        return pd.concat([predictor(f) for f in _frames(table)], ignore_index=True)

    def on_pool(progress: Any) -> pd.DataFrame:  # the Dataset lives only in this frame (see run_pipeline)
        import ray.data

        ds = pool_predictions(spec, m, ray.data.from_pandas(_frames(table)), progress)
        return ds.to_pandas().sort_values(_ROW, ignore_index=True)

    if local:
        return run_pipeline(here, spec, "replay")
    return run_pipeline(on_pool, spec, "replay", watched=True)


def _read_labels(path: str, label: str, key: str) -> pd.DataFrame:
    where = Path(path).expanduser()
    if not where.exists():
        raise DataError(f"--labels {path}: no such file")
    try:
        frame = pd.read_csv(where) if where.suffix.lower() in (".csv", ".txt") else pd.read_parquet(where)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"--labels {path}: not a parquet or CSV table: {str(err).splitlines()[0]}") from None
    for column, what in ((key, "--key"), (label, "the label (data.label)")):
        if column not in frame.columns:
            shown = ", ".join(map(str, frame.columns[:8]))
            raise DataError(f"{path}: {column}: no such column ({what}); columns are {shown}")
    return frame


def _captured_keys(table: pa.Table, key: str, capture: str) -> pd.Series:
    if key in table.column_names:
        return table.column(key).to_pandas()
    records = [json.loads(t) if t else {} for t in table.column("input").to_pylist()]
    if records and all(key in r for r in records):
        return pd.Series([r[key] for r in records])
    columns = ", ".join(n for n in table.column_names if n not in ("input", "image", "output"))
    raise DataError(f"{capture}: {key}: no such column of the capture ({columns}) or field of its inputs (--key)")


def _join(table: pa.Table, capture: str, path: str, label: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(captured row numbers with a label, their labels): the labels joined to the capture by ``key``
    (and ``item`` where both have it: a request of several items has one id)."""
    labels = _read_labels(path, label, key)
    left = pd.DataFrame({key: _captured_keys(table, key, capture), _ROW: np.arange(table.num_rows)})
    on = [key]
    if key == "request_id" and "item" in labels.columns:
        left["item"], on = table.column("item").to_pandas(), [key, "item"]
    elif left[key].duplicated().any():
        raise DataError(
            f"{path}: {key}: captured requests hold several items under one {key}; "
            "give the labels an 'item' column (the item's place in its request)"
        )
    if labels.duplicated(on).any():
        raise DataError(f"{path}: {key}: a key appears more than once (one label per captured row)")
    for column in on:  # ids read as numbers on one side and text on the other still match
        left[column], labels[column] = left[column].astype(str), labels[column].astype(str)
    joined = left.merge(labels[[*on, label]], on=on, how="inner").sort_values(_ROW)
    joined = joined[joined[label].notna()]
    if joined.empty:
        raise DataError(f"{path}: {key}: no captured row's {key} is in the labels")
    return joined[_ROW].to_numpy(), joined[label].to_numpy()


def _truth(values: np.ndarray, task: str, classes: list[Any], path: str, label: str) -> np.ndarray:
    if task == "regression":
        try:
            return values.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{path}: {label}: expected numbers for a regression model") from None
    # Labels read from a file come back as text, int or float ("1", 1, 1.0): matched by their text.
    names = {str(c) for c in classes}
    text = np.asarray([str(v) for v in values], dtype=object)
    floats = {str(float(c)): str(c) for c in classes if isinstance(c, int | float) and not isinstance(c, bool)}
    text = np.asarray([t if t in names else floats.get(t, t) for t in text], dtype=object)
    unknown = [t for t in text if t not in names]
    if unknown:
        raise DataError(f"{path}: {label}: value {unknown[0]!r} is not one of the model's classes {sorted(names)}")
    return text


def _pick(answers: stats.Answers, rows: np.ndarray) -> stats.Answers:
    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    return stats.Answers(
        take(answers.labels), take(answers.probability), take(answers.probabilities), take(answers.prediction)
    )


def replay(
    spec: Spec,
    *,
    capture: str,
    model: str,
    role: str = "primary",
    labels: str | None = None,
    key: str | None = None,
    out: Path | None = None,
    registry: Registry | None = None,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> ReplayResult:
    """Score ``capture``'s inputs answered as ``role`` with run ``model``; compare with the recorded answers."""
    start = time.perf_counter()
    if role not in ROLES:
        raise SpecError(f"--role {role}: expected one of {', '.join(ROLES)}")
    if (labels is None) != (key is None):
        raise SpecError("--labels and --key go together: the labels file and the column that joins it to the capture")
    if resamples < 100:
        raise SpecError(f"resamples {resamples}: expected at least 100 for a 95% interval")
    everything = read_capture(capture, roles=None)
    table = everything.filter(pc.equal(everything["role"], role))
    if table.num_rows == 0:
        present = sorted(set(everything.column("role").to_pylist()))
        raise DataError(f"{capture}: no rows answered as {role} (roles captured: {', '.join(present)})")
    registry = registry or open_registry()
    local = _in_process(spec, table.num_rows, table.column("image").null_count < table.num_rows)
    m = resolve_model(spec, model, registry, local=local)
    target = m.kind.target(m.meta)
    predicted = _predict(spec, m, table, local)
    candidate = stats.frame_answers(predicted, target.task)
    recorded = stats.recorded_answers(outputs_of(table), target.task, target.classes)
    agreement = stats.agreement(candidate, recorded)
    shift = stats.shift(candidate, recorded, target.classes)
    differences: dict[str, stats.Difference] = {}
    labelled = 0
    if labels is not None and key is not None:
        label = spec.data.label or target.label
        rows, values = _join(table, capture, labels, label, key)
        truth = _truth(values, target.task, list(target.classes), labels, label)
        labelled = len(rows)
        differences = stats.differences(
            _pick(candidate, rows),
            _pick(recorded, rows),
            truth,
            target.task,
            target.classes,
            resamples=resamples,
            seed=seed,
        )
    models = sorted(set(table.column("model").to_pylist()))
    with registry.start_run(
        spec.name,
        kind="replay",
        family=m.family.name,
        parent_id=m.record.run_id,
        tags={"rayline.model_run": m.record.run_id, TAG_CAPTURE: capture, TAG_RECORDED: ",".join(models)},
    ) as run:
        engine = "local" if local else "ray"
        run.log_params(
            {
                "capture": capture,
                "role": role,
                "labels": labels or "",
                "key": key or "",
                "engine": engine,
                "resamples": resamples,
                "seed": seed,
                "recorded_models": ",".join(models),
            }
        )
        metrics: dict[str, float] = {"rows": table.num_rows, "labelled_rows": labelled, **agreement}
        metrics.update({f"psi_{name}": s.psi for name, s in shift.items()})
        for name, d in differences.items():
            metrics.update({f"candidate_{name}": d.candidate, f"recorded_{name}": d.recorded})
            metrics.update({f"diff_{name}": d.difference, f"diff_{name}_low": d.low, f"diff_{name}_high": d.high})
        run.log_metrics(metrics)
    folder = out or runtime.home() / "replays" / run.run_id
    result = ReplayResult(
        run.run_id,
        m.record.run_id,
        models,
        table.num_rows,
        labelled,
        agreement,
        shift,
        differences,
        folder,
        engine,
        time.perf_counter() - start,
    )
    _write(result, candidate, recorded, capture)
    registry.log_folder(run.run_id, folder, "report")
    return result


# ------------------------------------------------------------------------------ the report
def _write(result: ReplayResult, candidate: stats.Answers, recorded: stats.Answers, capture: str) -> None:
    with atomic_output(result.folder, own=("*.html", "*.png", "*.json")) as tmp:
        tmp.mkdir(parents=True)
        figures = _plots(tmp, result, candidate, recorded)
        payload = {
            "run_id": result.run_id,
            "candidate": result.candidate,
            "recorded": result.recorded,
            "capture": capture,
            "rows": result.rows,
            "labelled_rows": result.labelled,
            "agreement": result.agreement,
            "shift": {k: asdict(v) for k, v in result.shift.items()},
            "differences": {k: {**asdict(v), "draws": None} for k, v in result.differences.items()},
        }
        (tmp / "replay.json").write_text(json.dumps(payload, indent=1))
        (tmp / "report.json").write_text(json.dumps({"run_id": result.run_id, "figures": figures}, indent=2))
        (tmp / "report.html").write_text(_html(result, capture, [f["file"] for f in figures]))


def _plots(folder: Path, result: ReplayResult, candidate: stats.Answers, recorded: stats.Answers) -> list[Drawn]:
    drawn: list[Drawn] = []
    mine, theirs = candidate.prediction, recorded.prediction
    what = "prediction"
    if mine is None:
        mine, theirs, what = candidate.probability, recorded.probability, "probability"
    assert mine is not None and theirs is not None

    def draw_scatter(ax: Any) -> None:
        ax.scatter(theirs, mine, s=6, alpha=0.5)
        lo, hi = float(np.nanmin([theirs.min(), mine.min()])), float(np.nanmax([theirs.max(), mine.max()]))
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="equal")
        ax.set_title(f"candidate vs recorded {what} (agreement {result.agreement['agreement']:.1%})")
        ax.set_xlabel(f"recorded {what}")
        ax.set_ylabel(f"candidate {what}")
        ax.legend()

    drawn.append(figure(folder, "agreement.png", draw_scatter))
    for name, s in result.shift.items():

        def draw_shift(ax: Any, name: str = name, s: stats.Shift = s) -> None:
            x = np.arange(len(s.buckets))
            ax.bar(x - 0.2, s.recorded, width=0.4, label="recorded")
            ax.bar(x + 0.2, s.candidate, width=0.4, label="candidate")
            ax.set_xticks(x, s.buckets, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{name}: share per bucket (PSI {s.psi:.4f})")
            ax.set_ylabel("share of rows")
            ax.legend()

        drawn.append(figure(folder, f"shift_{name}.png", draw_shift))
    for name, d in result.differences.items():

        def draw_diff(ax: Any, name: str = name, d: stats.Difference = d) -> None:
            ax.hist(d.draws, bins=40, color="#7a9cc6")
            ax.axvline(0.0, color="black", linewidth=1, label="no difference")
            ax.axvline(d.low, color="red", linestyle="--", label=f"{stats.LEVEL:.0%} interval")
            ax.axvline(d.high, color="red", linestyle="--")
            ax.set_title(f"{name}: candidate - recorded = {d.difference:+.4f} [{d.low:+.4f}, {d.high:+.4f}]")
            ax.set_xlabel(f"{name} difference ({d.resamples} resamples)")
            ax.set_ylabel("resamples")
            ax.legend()

        drawn.append(figure(folder, f"difference_{name}.png", draw_diff))
    return drawn


def _html(result: ReplayResult, capture: str, images: list[str]) -> str:
    def rows(values: dict[str, Any]) -> str:
        return "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in values.items()
        )

    summary = {
        "candidate run": result.candidate,
        "recorded runs": ", ".join(result.recorded),
        "capture": capture,
        "rows replayed": f"{result.rows:,}",
        "rows labelled": f"{result.labelled:,}",
        "engine": result.engine,
    }
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>rayline replay {result.run_id}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 8px}"
        "img{max-width:100%;margin:1em 0}</style></head><body>",
        f"<h1>replay run {result.run_id}</h1><table>{rows(summary)}</table>",
        "<h2>Agreement with the recorded answers</h2><table>"
        + rows({k: f"{v:.6g}" for k, v in result.agreement.items()})
        + "</table>",
        "<h2>Shift of the predictions (PSI, recorded as the reference)</h2><table>"
        + rows({k: f"{s.psi:.4f}" for k, s in result.shift.items()})
        + "</table>",
    ]
    if result.differences:
        parts.append(f"<h2>Metrics on the labelled rows (candidate - recorded, {stats.LEVEL:.0%} bootstrap)</h2>")
        parts.append(
            "<table><tr><td>metric</td><td>candidate</td><td>recorded</td><td>difference</td><td>interval</td></tr>"
            + "".join(
                f"<tr><td>{html.escape(n)}</td><td>{d.candidate:.4f}</td><td>{d.recorded:.4f}</td>"
                f"<td>{d.difference:+.4f}</td><td>[{d.low:+.4f}, {d.high:+.4f}]</td></tr>"
                for n, d in result.differences.items()
            )
            + "</table>"
        )
    parts.extend(f"<div><img src='{name}' alt='{name}'></div>" for name in images)
    parts.append("</body></html>")
    return "\n".join(parts)
