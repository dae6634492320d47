"""Write-then-rename, so a failed or interrupted run never leaves a half-written output."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rayline.errors import DataError


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_replaceable(final: Path, own: tuple[str, ...]) -> None:
    """A folder output replaces only what rayline wrote there: files matching ``own``. A user's
    ``--out .`` or ``--out notes.txt`` must not be wiped for a report."""
    if final.is_dir():
        stray = next((p for p in final.rglob("*") if not p.is_dir() and not any(p.match(o) for o in own)), None)
        if stray is None:
            return
        what = f"holds {stray.relative_to(final)}, which rayline did not write"
    else:
        what = "is a file"
    raise DataError(f"{final} already exists and {what}", hint="pick another output, or remove it first")


@contextmanager
def atomic_output(
    target: str | os.PathLike[str], *, overwrite: bool = True, own: tuple[str, ...] | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it replaces ``target`` in one rename.

    Works for files and folders. The temp path sits in the same folder so the rename never
    crosses file systems. On any exception the temp path is removed and ``target`` is untouched.
    ``own``: for a folder output, the names (globs) of the files it writes; an existing target
    holding anything else, or a file in its place, is refused rather than replaced.
    """
    final = Path(target).expanduser().resolve()
    if final.exists() and not overwrite:
        raise DataError(f"{final} already exists", hint="pass --overwrite to replace it")
    if final.exists() and own is not None:
        _check_replaceable(final, own)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocking = next((p for p in (final.parent, *final.parent.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file" if blocking is not None else err.strerror
        raise DataError(f"cannot create folder {final.parent}: {why}") from None
    tag = uuid.uuid4().hex[:8]
    probe = final.with_name(f".{final.name}.probe-{tag}")
    try:  # before any work: a folder that takes no files fails now, in words, not at the end
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        raise DataError(f"cannot write in {final.parent}: {err.strerror}") from None
    tmp = final.with_name(f".{final.name}.tmp-{tag}")
    try:
        yield tmp
        if not tmp.exists():
            raise DataError(f"nothing was written for {final}")
        if final.exists():
            # A folder can't be replaced by rename(2) while it has files: move it aside first.
            old = final.with_name(f".{final.name}.old-{tag}")
            final.rename(old)
            tmp.rename(final)
            _discard(old)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            _discard(tmp)
