"""Batch prediction by parts: streaming, resumable, with bad rows set aside.

A data kind that can cut its input into parts (the table kind: ``plan_parts``, ``read_part``,
``screen``) is predicted part by part, on either engine: a part is read as a stream of Arrow
batches, predicted (the family's ``predict_arrow``), and written as ``part-NNNNN.parquet`` in
the job's folder, ``.<out>.partial`` beside the output. Once a part's file is whole it is
renamed into place and a line is appended to the folder's manifest (``_parts.jsonl``). So:

- memory holds a batch per predictor, whatever the input's size; nothing of the data crosses
  Ray's object store (the pool's actors are handed part numbers and read the rows themselves);
- a killed job leaves whole part files and a manifest of them: ``--resume`` predicts only the
  parts the manifest lacks (a part written but not yet listed is written again, replacing its
  file), so no row is lost or written twice;
- the output is renamed into place only when every part is written.

``predict.on_bad_row``: every batch is screened by the request policy of ``POST /predict`` (the
kind's ``screen``: vectorised masks, nothing copied for a clean batch). ``fail`` (the default)
stops the job at the first bad row found, naming its file, row number (0-based, as the
quarantine's ``_row``) and reason, and the job's folder is removed (a resume would fail the
same way); ``skip`` and ``quarantine`` leave bad rows out, and quarantine writes them, with their
file, row number and reason, to ``<out>.quarantine.parquet``. Evaluation applies ``fail``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayline import checkpoints
from rayline.errors import DataError
from rayline.families import get_family
from rayline.stages.heartbeat import Pulse
from rayline.stages.tally import Tally, tally_batch

MANIFEST = "_parts.jsonl"
QUARANTINE = "quarantine"


@dataclass
class Done:
    """What one part gave: rows predicted, rows set aside."""

    part: int
    rows: int
    bad: int


def supports_parts(kind: Any, predictor_family: Any) -> bool:
    """Whether the kind cuts its input into parts and the family predicts Arrow batches."""
    predictor = getattr(predictor_family, "predictor", None)  # a family's predictor class, where it names one
    return hasattr(kind, "plan_parts") and hasattr(predictor, "predict_arrow")


# ------------------------------------------------------------------------------ the folder
def partial_folder(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def quarantine_path(target: Path) -> Path:
    return target.with_name(f"{target.name}.quarantine.parquet")


def job_key(model_run: str, parts: list[Any], on_bad_row: str) -> str:
    """What a resumed job must share with the killed one: the model, the parts, the policy."""
    listed = [{k: (vars(v) if k == "split" and v is not None else v) for k, v in vars(p).items()} for p in parts]
    described = json.dumps([model_run, on_bad_row, listed], sort_keys=True, default=str)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def open_folder(target: Path, key: str, resume: bool) -> tuple[Path, dict[int, Done]]:
    """The job's folder and the parts already finished there (``resume``), or a fresh folder."""
    folder = partial_folder(target)
    finished: dict[int, Done] = {}
    manifest = folder / MANIFEST
    if resume and manifest.exists():
        lines = manifest.read_text().splitlines()
        if lines and json.loads(lines[0]).get("job") == key:
            for line in lines[1:]:
                try:
                    done = Done(**json.loads(line))
                except (ValueError, TypeError):
                    break  # a line cut by the kill: that part is predicted again
                finished[done.part] = done
            return folder, finished
    if folder.exists():
        shutil.rmtree(folder)
    (folder / QUARANTINE).mkdir(parents=True)
    with open(manifest, "w") as out:
        out.write(json.dumps({"job": key}) + "\n")
    return folder, finished


def record(folder: Path, done: Done) -> None:
    """A finished part, appended to the manifest and flushed to disk."""
    with open(folder / MANIFEST, "a") as out:
        out.write(json.dumps(asdict(done)) + "\n")
        out.flush()
        os.fsync(out.fileno())


def finish(folder: Path, target: Path, quarantine: bool) -> Path | None:
    """Every part is written: the quarantine and the predictions renamed into place."""
    (folder / MANIFEST).unlink()
    aside = folder / QUARANTINE
    kept: Path | None = None
    if quarantine:
        kept = quarantine_path(target)
        _replace(aside, kept)
    elif aside.exists():
        shutil.rmtree(aside)
    _replace(folder, target)
    return kept


def check_target(final: Path) -> None:
    """An existing output is replaced only when it is a folder of parquet files (rayline's)."""
    if not final.exists():
        return
    stray = next((p for p in final.rglob("*") if p.is_file() and not p.name.endswith(".parquet")), None)
    if final.is_file() or stray is not None:
        what = (
            "is a file"
            if final.is_file()
            else f"holds {stray.relative_to(final) if stray else ''}, which rayline did not write"
        )
        raise DataError(f"{final} already exists and {what}", hint="pick another output, or remove it first")


def _replace(source: Path, final: Path) -> None:
    check_target(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        source.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        source.rename(final)


# --------------------------------------------------------------------------- the predictor
class PartPredictor:
    """Predicts whole parts into the job's folder; loads the model once (an actor's ``__init__``)."""

    def __init__(
        self,
        family: str,
        checkpoint: checkpoints.Portable,
        kind: Any,
        meta: dict[str, Any],
        parts: list[Any],
        folder: str,
        *,
        cpus: int,
        batch_rows: int,
        on_bad_row: str,
        drop: tuple[str, ...] = (),
        progress: Any | None = None,
        target: Any | None = None,
    ) -> None:
        self.pulse = Pulse(progress)
        self.pulse.beat("an actor loading the model")
        self.predictor: Any = get_family(family).load(checkpoints.local_folder(checkpoint), cpus=cpus)
        self.kind, self.meta, self.parts, self.folder = kind, meta, parts, Path(folder)
        self.batch_rows, self.on_bad_row, self.drop = batch_rows, on_bad_row, list(drop)
        self.target = target  # set: the pool evaluates (``tally``) instead of writing parts

    def run(self, index: int) -> Done:
        part = self.parts[index]
        name = f"part-{index:05d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        writer: pq.ParquetWriter | None = None
        aside: list[pa.Table] = []
        rows = bad = 0
        try:
            for batch, numbers in self.kind.read_part(part, self.batch_rows):
                self.pulse.beat("a batch predicted")
                screened = self.kind.screen(batch, self.meta, part)
                model_input, kept = screened.model_input, screened.rows
                if len(screened.bad_positions):
                    if self.on_bad_row == "fail":
                        raise self._refused(screened, numbers, part)
                    bad += len(screened.bad_positions)
                    if self.on_bad_row == "quarantine":
                        aside.append(self._aside(screened, numbers, part))
                table = pa.Table.from_batches([kept.drop_columns(self.drop) if self.drop else kept])
                for column, values in self.predictor.predict_arrow(model_input).items():
                    table = table.append_column(column, values)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if aside:
            pq.write_table(pa.concat_tables(aside, promote_options="permissive"), self.folder / QUARANTINE / name)
        if writer is not None:
            tmp.rename(self.folder / name)
        return Done(index, rows, bad)

    def tally(self, index: int, target: Any) -> Tally:
        """Evaluation's pass over a part: its predictions reduced against ``target.label``, nothing written."""
        total = Tally()
        part = self.parts[index]
        for batch, numbers in self.kind.read_part(part, self.batch_rows):
            self.pulse.beat("a batch predicted")
            screened = self.kind.screen(batch, self.meta, part)  # evaluation's policy is ``fail``
            if len(screened.bad_positions):
                raise self._refused(screened, numbers, part, hint="drop or fix that row: evaluation takes no bad row")
            raw = self.predictor.raw_arrow(screened.model_input)  # no output column: nothing is written
            total.add(tally_batch(batch.column(target.label), raw, target))
        return total

    def _refused(
        self,
        screened: Any,
        numbers: np.ndarray,
        part: Any,
        hint: str = "set predict.on_bad_row=skip or quarantine to predict the other rows",
    ) -> DataError:
        """``on_bad_row: fail``: the batch's first bad row, as the error that stops the job."""
        row, reason = int(numbers[screened.bad_positions[0]]), screened.bad_reasons[0]
        return DataError(f"{self.kind.file_of(part)}: row {row}: {reason}", hint=hint)

    def _aside(self, screened: Any, numbers: np.ndarray, part: Any) -> pa.Table:
        """A batch's bad rows as given, with where they were and why."""
        table = pa.Table.from_batches([screened.bad])
        table = table.append_column("_file", pa.array([self.kind.file_of(part)] * len(screened.bad_positions)))
        table = table.append_column("_row", pa.array(numbers[screened.bad_positions]))
        return table.append_column("_reason", pa.array(screened.bad_reasons, type=pa.string()))

    def run_or_tally(self, index: int) -> Done | dict[str, Any]:
        """An actor's call: the part written (``Done``), or, evaluating, its tally (a JSON line)."""
        if self.target is not None:
            return {"part": index, "tally": self.tally(index, self.target).to_json()}
        return self.run(index)


def run_local(predictor: PartPredictor, todo: list[int], folder: Path) -> list[Done]:
    """Every part in ``todo``, in order, in this process."""
    out = []
    for index in todo:
        done = predictor.run(index)
        record(folder, done)
        out.append(done)
    return out
