"""Checkpoint folders: their ``meta.json``, the scratch folder a loop writes one in, and their
bytes as in-memory blobs, so Ray actors on any node can load them.

Every family's checkpoint is a folder holding its model file(s) and ``meta.json`` (family, data
kind, layout, metrics; ``write_meta``, ``read_meta``, ``checked_meta``). A training loop writes
one in a ``scratch`` folder and hands it to ``LoopContext.report``, which copies or moves it.

A registry checkpoint is a local folder on the driver (or an MLflow download). Actors for batch
inference and serving may run on other nodes, so the folder travels by value: a mapping of
relative path -> bytes, written out once per actor process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from rayline.errors import DataError
from rayline.runtime import cluster_address

META_FILE = "meta.json"
Blob = dict[str, bytes]
# A blob, a folder path when every actor shares this machine's disk, or (``stored``) a blob in
# Ray's object store.
Portable = Blob | str | Any
_MAX_BYTES = 2 * 1024**3


def portable(folder: Path) -> Portable:
    """A form of the checkpoint that actors can load: the path locally, the bytes on a cluster."""
    return pack(folder) if cluster_address() else str(folder)


def stored(folder: Path) -> Portable:
    """Like ``portable``, with the bytes put in Ray's object store once: for the actors of a
    pipeline this process drives (Ray Data pickles the actors' arguments into every task of the
    pool's fused operator; a reference keeps a 45 MB ResNet out of them). Not for Serve, whose
    replicas outlive the process that would own the object."""
    if not cluster_address():
        return str(folder)
    import ray

    return ray.put(pack(folder))


def local_folder(ckpt: Portable) -> Path:
    if isinstance(ckpt, str):
        return Path(ckpt)
    if isinstance(ckpt, dict):
        return unpack(ckpt)
    import ray

    return unpack(cast(Blob, ray.get(ckpt)))


def pack(folder: Path) -> Blob:
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    if sum(len(b) for b in files.values()) > _MAX_BYTES:
        raise ValueError(f"checkpoint {folder} is over 2 GiB; pass it by path instead")
    return files


def unpack(blob: Blob) -> Path:
    """Write the blob to a per-content temp folder (reused within one process) and return it."""
    digest = hashlib.sha256(b"".join(k.encode() + v for k, v in sorted(blob.items()))).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"rayline-ckpt-{digest}"
    if not folder.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f"rayline-ckpt-{digest}-"))
        for name, data in blob.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        # If another process on this node won the race, its copy is identical: keep it.
        with contextlib.suppress(OSError):
            staging.rename(folder)
    return folder


def write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    """``meta.json`` of the checkpoint in ``folder`` (indented: people read it)."""
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """An empty ``checkpoint`` folder to write one checkpoint in and report; removed afterwards
    (``LoopContext.report`` copies or moves what it keeps)."""
    with tempfile.TemporaryDirectory(prefix="rayline-ckpt-") as tmp:
        folder = Path(tmp) / "checkpoint"
        folder.mkdir()
        yield folder


def checked_meta(folder: Path, model_file: str, family: str) -> dict[str, Any]:
    """The ``meta.json`` of a ``family`` checkpoint that holds ``model_file``, as written; a
    folder without either is refused as not such a checkpoint."""
    path = folder / META_FILE
    if not path.is_file() or not (folder / model_file).is_file():
        raise DataError(f"{folder} is not a checkpoint of the {family} family (no {model_file} / {META_FILE})")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def read_meta(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json``: its family, data kind and layout (what the data kind wrote).

    Checkpoints written before the data kind was recorded name it by their layout's key.
    """
    path = folder / META_FILE
    meta: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if "data_kind" not in meta:
        if "images" in meta:
            meta["data_kind"], meta["layout"] = "images", meta["images"]
        else:
            if "scaler" in meta and isinstance(meta.get("layout"), dict):
                meta["layout"].setdefault("scaler", meta["scaler"])
            meta["data_kind"] = "table"
    return meta
