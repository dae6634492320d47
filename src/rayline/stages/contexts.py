"""The three places a family's training loop runs, behind one ``LoopContext`` interface.

- ``LocalContext``: in the calling process (small data: no Ray Train start-up cost).
- ``TuneTrialContext``: inside a Ray Tune function trainable (data from the object store).
- ``TrainWorkerContext``: inside a Ray Train worker (data from Ray Data shards);
  ``train_worker`` is every worker's entry point.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rayline.families import get_family

Split = Literal["train", "valid"]


def _frame_batches(frame: pd.DataFrame, batch_size: int, shuffle: bool, seed: int) -> Iterator[dict[str, np.ndarray]]:
    order = np.random.default_rng(seed).permutation(len(frame)) if shuffle else np.arange(len(frame))
    for start in range(0, len(frame), batch_size):
        rows = frame.iloc[order[start : start + batch_size]]
        yield {col: np.stack(rows[col].to_numpy()) for col in rows.columns}


class LocalContext:
    """Runs the loop here. Keeps the metric history and the latest checkpoint in ``workdir``."""

    def __init__(
        self,
        frames: Mapping[str, pd.DataFrame],
        *,
        cpus: int,
        workdir: Path,
        on_report: Callable[[Mapping[str, float]], None] | None = None,
    ) -> None:
        self._frames = frames
        self._cpus = max(1, cpus)
        self._on_report = on_report
        self._epoch = 0
        self.workdir = workdir
        self.history: list[dict[str, float]] = []
        self.checkpoint: Path | None = None

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

    def batches(self, split: Split, batch_size: int, *, shuffle: bool) -> Iterator[dict[str, np.ndarray]]:
        self._epoch += 1
        return _frame_batches(self._frames[split], batch_size, shuffle, seed=self._epoch)

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        self.history.append(dict(metrics))
        if checkpoint is not None:
            # Keep only the newest checkpoint, swapped in whole: a crash never leaves half of one.
            target = self.workdir / "checkpoint"
            staging = self.workdir / "checkpoint.new"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint, staging)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            self.checkpoint = target
        if self._on_report is not None:
            self._on_report(metrics)


class TuneTrialContext(LocalContext):
    """Runs the loop inside a Tune trial; every report goes to ``ray.tune.report``."""

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        import ray.tune

        self.history.append(dict(metrics))
        ray.tune.report(
            dict(metrics), checkpoint=ray.tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        )


class TrainWorkerContext:
    """Runs the loop in a Ray Train worker; shards come from the trainer's datasets."""

    def __init__(self, cpus: int) -> None:
        import ray.train

        self._ctx = ray.train.get_context()
        self._cpus = max(1, cpus)
        self._epoch = 0

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
        import ray.train

        frame: pd.DataFrame = ray.train.get_dataset_shard(split).materialize().to_pandas()
        return frame

    def batches(self, split: Split, batch_size: int, *, shuffle: bool) -> Iterator[dict[str, np.ndarray]]:
        import ray.train

        self._epoch += 1
        shard = ray.train.get_dataset_shard(split)
        kwargs: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy"}
        if shuffle:
            kwargs.update(local_shuffle_buffer_size=max(batch_size * 8, 1024), local_shuffle_seed=self._epoch)
        batches: Iterator[dict[str, np.ndarray]] = shard.iter_batches(**kwargs)
        return batches

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        import ray.train

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
    family.train_loop(config, TrainWorkerContext(cpus=int(config["worker_cpus"])))
