"""Where an interrupted train run or tune search leaves what ``--resume`` continues from.

Every place is named after the spec's name and fingerprint (``Spec.fingerprint``: the whole
validated spec, ``--set`` values included), so the same command finds it again and a changed
spec never continues another's model:

- in process: ``RAYLINE_HOME/resume/<name>-train-<hash>/`` (a ``LocalContext``'s workdir);
- a Ray Train run: ``<storage>/<name>-train-<hash>/`` (Ray Train restores a run of the same name
  and storage from its ``checkpoint_manager_snapshot.json``);
- a Tune search: ``<storage>/<name>-tune-<hash>/`` (``Tuner.restore``).

One state per spec: two runs of the same spec at once would share it (a fresh run clears it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rayline import runtime
from rayline.spec import Spec

# What Ray Train V2 restores a run from (ray/train/v2/_internal/constants.py).
_TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"


def train_key(spec: Spec) -> str:
    return f"{spec.name}-train-{spec.fingerprint()}"


def search_key(spec: Spec) -> str:
    return f"{spec.name}-tune-{spec.fingerprint()}"


def local_state(spec: Spec) -> Path:
    """The in-process run's workdir: its latest checkpoint and the history up to it."""
    return runtime.home() / "resume" / train_key(spec)


def clear_local(spec: Spec) -> None:
    shutil.rmtree(local_state(spec), ignore_errors=True)


def storage_folder(name: str) -> str:
    """A run's or search's folder under the storage path (local or a URI)."""
    return f"{runtime.storage_path().rstrip('/')}/{name}"


def _fs(name: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of a folder under the storage path: local or remote alike."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(runtime.storage_path())
    return fs, f"{root.rstrip('/')}/{name}"


def train_resumable(name: str) -> bool:
    """Whether the Ray Train run ``name`` left a snapshot of its checkpoints to restore from."""
    import pyarrow.fs

    fs, path = _fs(name)
    return bool(fs.get_file_info(f"{path}/{_TRAIN_SNAPSHOT}").type == pyarrow.fs.FileType.File)


def clear_storage(name: str) -> None:
    """Remove a run's or search's folder under the storage path (nothing when there is none)."""
    import pyarrow.fs

    fs, path = _fs(name)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
        fs.delete_dir(path)
