"""What a Ray Train worker's loop sees of its splits: kept in memory or streamed, every row once
per epoch across the workers, the columns of a row together, a new order each epoch."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rayline.errors import RuntimeStartError
from rayline.stages.contexts import TrainWorkerContext, split_for_workers
from rayline.stages.heartbeat import Pulse

pytestmark = pytest.mark.slow
TRAIN_ROWS, VALID_ROWS, EPOCHS = 60, 20, 2


@pytest.mark.parametrize("cache_mb", ["1", "0"], ids=["held", "streamed"])
def test_each_epoch_gives_every_row_to_one_worker(
    tmp_path: Path, ray_session: object, cache_mb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    # defined here so that Ray pickles it by value (workers cannot import this test module)
    def _record(config: dict[str, Any]) -> None:
        """A loop that only writes down the rows it was given, per split and epoch."""
        with tempfile.TemporaryDirectory() as tmp:
            ctx = TrainWorkerContext(cpus=1, workdir=Path(tmp), pulse=Pulse(None), held=config["held"])
            seen: dict[str, list[int]] = {}
            for epoch in range(1, EPOCHS + 1):
                for split in ("train", "valid"):
                    keys: list[int] = []
                    for batch in ctx.batches(split, 8, shuffle=split == "train"):
                        # a row's columns stay together
                        assert (batch["x"][:, 1] == batch["key"] * 10).all()
                        keys += batch["key"].tolist()
                    seen[f"{split}{epoch}"] = keys
            Path(config["out"], f"{ctx.rank}.json").write_text(json.dumps(seen))

    def rows(start: int, stop: int) -> ray.data.Dataset:
        items = [{"key": i, "x": np.array([i, i * 10, 0])} for i in range(start, stop)]
        return ray.data.from_items(items).materialize()

    out = tmp_path / "seen"
    out.mkdir()
    monkeypatch.setenv("RAYLINE_SHARD_CACHE_MB", cache_mb)
    held, streamed = split_for_workers({"train": rows(0, TRAIN_ROWS), "valid": rows(1000, 1000 + VALID_ROWS)}, 2)
    assert sorted(held) == (["train", "valid"] if cache_mb == "1" else [])
    TorchTrainer(
        _record,
        train_loop_config={"held": held, "out": str(out)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(storage_path=str(tmp_path / "results"), name="shards"),
        datasets=streamed,
    ).fit()

    seen = [json.loads((out / f"{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in range(1, EPOCHS + 1):
        for split, expected in (("train", range(TRAIN_ROWS)), ("valid", range(1000, 1000 + VALID_ROWS))):
            given = seen[0][f"{split}{epoch}"] + seen[1][f"{split}{epoch}"]
            assert sorted(given) == list(expected), f"{split} epoch {epoch}"
            assert seen[0][f"{split}{epoch}"] and seen[1][f"{split}{epoch}"]  # both workers had a share
    if held:
        # a held shard is the same rows every epoch, shuffled anew; validation keeps its order
        for worker in seen:
            assert sorted(worker["train1"]) == sorted(worker["train2"]) and worker["train1"] != worker["train2"]
            assert worker["valid1"] == worker["valid2"]


class _Sized:
    """Stands in for a materialized dataset of ``size`` bytes (no Ray needed to decide)."""

    def __init__(self, size: int) -> None:
        self._size = size

    def size_bytes(self) -> int:
        return self._size

    def split(self, n: int, *, equal: bool) -> list[str]:
        assert equal  # DDP's workers must take the same number of steps
        return [f"shard {i} of {self._size}" for i in range(n)]


def test_the_shard_cache_limit_is_per_worker_and_set_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = {"train": _Sized(3 * 2**20), "valid": _Sized(2**20)}

    def held(workers: int) -> list[str]:
        kept, streamed = split_for_workers(datasets, workers)
        assert sorted([*kept, *streamed]) == ["train", "valid"]
        assert all(len(shards) == workers for shards in kept.values())
        return sorted(kept)

    assert held(2) == ["train", "valid"]  # default: 1 GiB per worker
    monkeypatch.setenv("RAYLINE_SHARD_CACHE_MB", "1")
    assert held(2) == ["valid"]  # 1.5 MiB per worker is over
    assert held(3) == ["train", "valid"]
    monkeypatch.setenv("RAYLINE_SHARD_CACHE_MB", "0")
    assert held(2) == []
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("RAYLINE_SHARD_CACHE_MB", bad)
        with pytest.raises(RuntimeStartError, match=f"RAYLINE_SHARD_CACHE_MB='{bad}'"):
            split_for_workers(datasets, 2)
