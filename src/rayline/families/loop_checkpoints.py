"""What every family's loop does with checkpoints (``LoopContext.resume_from`` and ``report``).

Each family reads and writes its own model; these are the steps they share: the checkpoint's
``meta.json``, a finished run's final checkpoint reported again as it is, and a report that
carries a checkpoint on rank 0 only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rayline.checkpoints import META_FILE, scratch, write_meta
from rayline.families.base import LoopContext


def resume_point(ctx: LoopContext) -> tuple[Path, dict[str, Any]] | None:
    """(folder, meta) of the checkpoint the loop goes on from, or None for a fresh start."""
    folder = ctx.resume_from()
    if folder is None:
        return None
    meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
    return folder, meta


def finished(meta: dict[str, Any], marker: str) -> bool:
    """Whether ``meta`` is a final checkpoint's: its metrics carry ``marker`` (rounds_run, epochs_run)."""
    return marker in meta.get("metrics", {})


def report_again(ctx: LoopContext, folder: Path, meta: dict[str, Any]) -> None:
    """The run had finished (its final checkpoint) but was not registered: report that result again."""
    metrics = {k: float(v) for k, v in meta["metrics"].items()}
    ctx.report(metrics, folder if ctx.rank == 0 else None)


def report_checkpoint(
    ctx: LoopContext, metrics: Mapping[str, float], meta: Mapping[str, Any], write_model: Callable[[Path], Any]
) -> None:
    """Report ``metrics`` with a checkpoint of them: on rank 0 (the others only report),
    ``write_model(folder)`` writes the model beside ``meta.json`` (``meta`` plus these metrics)."""
    if ctx.rank != 0:
        ctx.report(metrics)
        return
    with scratch() as folder:
        write_model(folder)
        write_meta(folder, {**meta, "metrics": dict(metrics)})
        ctx.report(metrics, folder)
