"""What every family's loop does with the checkpoint it resumes from (``LoopContext.resume_from``).

Each family reads its own model back; these are the steps they share: the checkpoint's
``meta.json``, and a finished run's final checkpoint reported again as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayline.families.base import LoopContext

META_FILE = "meta.json"


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
