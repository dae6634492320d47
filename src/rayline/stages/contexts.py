"""The three places a family's training loop runs, behind one ``LoopContext`` interface.

- ``LocalContext``: in the calling process (small data: no Ray Train start-up cost).
- ``TuneTrialContext``: inside a Ray Tune function trainable (data from the object store).
- ``TrainWorkerContext``: inside a Ray Train worker (its share of each split, held or streamed);
  ``train_worker`` is every worker's entry point.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rayline import runtime
from rayline.families import get_family
from rayline.stages.heartbeat import Pulse

Split = Literal["train", "valid"]


def split_for_workers(datasets: Mapping[str, Any], workers: int) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """(splits each worker holds whole, splits that stream), for (materialized) datasets.

    A split whose share per worker is within ``runtime.shard_cache_bytes()`` is split here, one
    ``MaterializedDataset`` per worker with the same number of rows (Ray Data's
    ``split(equal=True)``: DDP's workers must take the same number of steps); the worker reads its
    own once. No streaming split to coordinate: Ray Data starts a coordinator actor per split and
    runs its executor in every worker each epoch. Larger splits stream (the trainer's datasets).
    """
    limit = runtime.shard_cache_bytes()
    held: dict[str, list[Any]] = {}
    streamed: dict[str, Any] = {}
    for name, ds in datasets.items():
        if ds.size_bytes() / max(1, workers) <= limit:
            held[name] = ds.split(workers, equal=True)
        else:
            streamed[name] = ds
    return held, streamed


def _frame_batches(frame: pd.DataFrame, batch_size: int, shuffle: bool, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of a frame's rows, each column stacked per batch (the frame's memory, not twice it)."""
    order = np.random.default_rng(seed).permutation(len(frame)) if shuffle else np.arange(len(frame))
    for start in range(0, len(frame), batch_size):
        rows = frame.iloc[order[start : start + batch_size]]
        yield {col: np.stack(rows[col].to_numpy()) for col in rows.columns}


def _array_batches(
    columns: Mapping[str, np.ndarray], batch_size: int, shuffle: bool, seed: int | tuple[int, ...]
) -> Iterator[dict[str, np.ndarray]]:
    rows = len(next(iter(columns.values()))) if columns else 0
    order = np.random.default_rng(seed).permutation(rows) if shuffle else None
    for start in range(0, rows, batch_size):
        if order is None:
            yield {col: values[start : start + batch_size] for col, values in columns.items()}
        else:
            take = order[start : start + batch_size]
            yield {col: values[take] for col, values in columns.items()}


class LocalContext:
    """Runs the loop here. Keeps the metric history and the latest checkpoint in ``workdir``.

    ``workdir/latest`` holds the newest checkpoint and the history up to it, swapped in whole
    at every checkpoint; with ``resume`` the context starts from what an interrupted run left
    there (``resume_from``, ``history``). ``workdir/latest.new`` is the next one being written:
    its ``history.json`` is written last, so a copy with one is complete (the process may have
    died between removing ``latest`` and renaming it).
    """

    def __init__(
        self,
        frames: Mapping[str, pd.DataFrame],
        *,
        cpus: int,
        workdir: Path,
        on_report: Callable[[Mapping[str, float]], None] | None = None,
        resume: bool = False,
    ) -> None:
        self._frames = frames
        self._cpus = max(1, cpus)
        self._on_report = on_report
        self._epoch = 0
        self.workdir = workdir
        self.history: list[dict[str, float]] = []
        self.checkpoint: Path | None = None
        self._resume: Path | None = None
        if resume:
            saved = saved_state(workdir)
            if saved is not None and saved.name != "latest":
                # Finish the swap the interrupted run was making, so the next report can stage anew.
                shutil.rmtree(workdir / "latest", ignore_errors=True)
                saved = saved.rename(workdir / "latest")
            if saved is not None:
                self._resume = self.checkpoint = saved / "checkpoint"
                self.history = json.loads((saved / HISTORY_FILE).read_text())

    @property
    def cpus(self) -> int:
        return self._cpus

    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    def frame(self, split: Split) -> pd.DataFrame:
        return self._frames[split]

    def whole(self, split: Split) -> pd.DataFrame:
        return self._frames[split]

    def batches(self, split: Split, batch_size: int, *, shuffle: bool) -> Iterator[dict[str, np.ndarray]]:
        self._epoch += 1
        return _frame_batches(self._frames[split], batch_size, shuffle, seed=self._epoch)

    def resume_from(self) -> Path | None:
        return self._resume

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        self.history.append(dict(metrics))
        if checkpoint is not None:
            # Keep only the newest checkpoint and the history up to it, swapped in whole: a
            # crash never leaves half of one, nor a history that does not match its checkpoint.
            target = self.workdir / "latest"
            staging = self.workdir / "latest.new"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint, staging / "checkpoint")
            (staging / HISTORY_FILE).write_text(json.dumps(self.history))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            self.checkpoint = target / "checkpoint"
            self._resume = None  # the old one was replaced; the loop read it before its first report
        if self._on_report is not None:
            self._on_report(metrics)


HISTORY_FILE = "history.json"


def saved_state(workdir: Path) -> Path | None:
    """The newest complete checkpoint + history a ``LocalContext`` left in ``workdir``, if any.

    A complete ``latest.new`` is newer than ``latest`` (the crash came before the swap).
    """
    for name in ("latest.new", "latest"):
        folder = workdir / name
        if (folder / HISTORY_FILE).is_file() and (folder / "checkpoint").is_dir():
            return folder
    return None


class TuneTrialContext(LocalContext):
    """Runs the loop inside a Tune trial; every report goes to ``ray.tune.report``."""

    def __init__(self, frames: Mapping[str, pd.DataFrame], *, cpus: int, workdir: Path, pulse: Pulse) -> None:
        super().__init__(frames, cpus=cpus, workdir=workdir)
        self._pulse = pulse

    def batches(self, split: Split, batch_size: int, *, shuffle: bool) -> Iterator[dict[str, np.ndarray]]:
        return self._pulse.batches(super().batches(split, batch_size, shuffle=shuffle), f"trial {split} batch")

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        import ray.tune

        self._pulse.beat("a trial's report")
        self.history.append(dict(metrics))
        ray.tune.report(
            dict(metrics), checkpoint=ray.tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        )

    def resume_from(self) -> Path | None:
        """The trial's last checkpoint when Tune restarts it (a restored search, a retried trial)."""
        import ray.tune

        if self._resume is None:
            self._resume = _copy_out(ray.tune.get_checkpoint(), self.workdir / "resume")
        return self._resume


class TrainWorkerContext:
    """Runs the loop in a Ray Train worker; shards come from the trainer's datasets (the splits in
    ``held`` come one per worker, see ``split_for_workers``; each is read once and kept)."""

    def __init__(self, cpus: int, workdir: Path, pulse: Pulse, held: Mapping[str, Sequence[Any]] | None = None) -> None:
        import ray.train

        self._pulse = pulse
        self._ctx = ray.train.get_context()
        self._cpus = max(1, cpus)
        self._epoch = 0
        self._workdir = workdir
        self._resume: Path | None = None
        self._held = dict(held or {})
        self._columns: dict[str, dict[str, np.ndarray]] = {}

    @property
    def cpus(self) -> int:
        return self._cpus

    @property
    def rank(self) -> int:
        return int(self._ctx.get_world_rank())

    @property
    def world_size(self) -> int:
        return int(self._ctx.get_world_size())

    def frame(self, split: Split) -> pd.DataFrame:
        self._pulse.beat(f"worker {self.rank} reading its {split} shard")
        frame: pd.DataFrame = self._shard(split).to_pandas()
        self._pulse.beat(f"worker {self.rank} read its {split} shard")
        return frame

    def whole(self, split: Split) -> pd.DataFrame:
        if split not in self._held:  # streamed: no other worker's share is at hand
            return self.frame(split)
        self._pulse.beat(f"worker {self.rank} reading all of {split}")
        return pd.concat([shard.to_pandas() for shard in self._held[split]], ignore_index=True)

    def _shard(self, split: Split) -> Any:
        """This worker's share of a split, materialized."""
        import ray.train

        if split in self._held:
            return self._held[split][self.rank]
        return ray.train.get_dataset_shard(split).materialize()

    def _shard_columns(self, split: Split) -> dict[str, np.ndarray]:
        self._pulse.beat(f"worker {self.rank} reading its {split} shard")
        parts = list(self._shard(split).iter_batches(batch_size=None, batch_format="numpy"))
        self._pulse.beat(f"worker {self.rank} read its {split} shard")
        return {col: np.concatenate([part[col] for part in parts]) for col in (parts[0] if parts else {})}

    def batches(self, split: Split, batch_size: int, *, shuffle: bool) -> Iterator[dict[str, np.ndarray]]:
        import ray.train

        self._epoch += 1
        note = f"worker {self.rank} {split} batch"
        if split in self._held:
            if split not in self._columns:
                self._columns[split] = self._shard_columns(split)
            seed = (self._epoch, self.rank)
            return self._pulse.batches(_array_batches(self._columns[split], batch_size, shuffle, seed), note)
        shard = ray.train.get_dataset_shard(split)
        kwargs: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy"}
        if shuffle:
            kwargs.update(local_shuffle_buffer_size=max(batch_size * 8, 1024), local_shuffle_seed=self._epoch)
        batches: Iterator[dict[str, np.ndarray]] = shard.iter_batches(**kwargs)
        return self._pulse.batches(batches, note)

    def resume_from(self) -> Path | None:
        """The run's latest checkpoint: Ray Train hands it to every worker after a worker failure
        (``FailureConfig``) and when a run of the same name and storage starts again (``--resume``)."""
        import ray.train

        if self._resume is None:
            self._resume = _copy_out(ray.train.get_checkpoint(), self._workdir / "resume")
        return self._resume

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        import ray.train

        self._pulse.beat(f"worker {self.rank} reported")
        if checkpoint is None or self.rank != 0:
            ray.train.report(dict(metrics))
            return
        # Ray copies the folder to storage; give it a stable copy (the caller may delete its own).
        with tempfile.TemporaryDirectory(prefix="rayline-report-") as tmp:
            staged = Path(tmp) / "checkpoint"
            shutil.copytree(checkpoint, staged)
            ray.train.report(dict(metrics), checkpoint=ray.train.Checkpoint.from_directory(str(staged)))


def train_worker(config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker: the family's loop on this worker's shards."""
    family = get_family(config["family"])
    with tempfile.TemporaryDirectory(prefix="rayline-worker-") as tmp:
        ctx = TrainWorkerContext(
            cpus=int(config["worker_cpus"]),
            workdir=Path(tmp),
            pulse=Pulse(config.get("progress")),
            held=config.get("held_splits"),
        )
        family.train_loop(config, ctx)


def _copy_out(checkpoint: Any, folder: Path) -> Path | None:
    """A Ray checkpoint as a local folder the loop may read at leisure.

    On local storage, the checkpoint's own folder: Ray keeps every checkpoint of a run
    (``num_to_keep=None``) and a copy would outlive a worker that is killed. On remote storage,
    a download into ``folder``.
    """
    if checkpoint is None:
        return None
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    if not folder.is_dir():
        checkpoint.to_directory(str(folder))
    return folder
