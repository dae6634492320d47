"""Lesson 4, Ray Data: batch inference on image files with a stateful actor pool, per-class accuracy.

The lesson's API on current Ray: ``read_images`` (with paths), ``map_batches`` with a callable
class on an ``ActorPoolStrategy`` pool (``compute=`` replaces ``concurrency=``), the ground
truth from the folder name, per-class accuracy with ``groupby(label).map_groups``, overall
accuracy with an aggregate, the three shuffles, and ``write_parquet``. rayline trains the model
and loads its checkpoint inside each actor; ``rayline predict``/``evaluate`` do all of this from
the spec.

    python examples/lessons/lesson4_data.py [--smoke]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from _common import EXAMPLES, arguments, digits_folder


class Classifier:
    """Loads the model once per actor (the expensive part), then predicts every batch it is given."""

    def __init__(self, checkpoint: str) -> None:
        from rayline.families import get_family

        self.predictor = get_family("resnet18").load(Path(checkpoint), cpus=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probabilities = self.predictor.probabilities(batch["image"][:, None])  # N x 1 x 28 x 28
        classes = np.array(self.predictor.layout.classes)
        return {"path": batch["path"], "predicted_label": classes[probabilities.argmax(1)]}


def ground_truth(batch: pd.DataFrame) -> pd.DataFrame:
    batch["label"] = [Path(p).parent.name for p in batch["path"]]
    batch["correct"] = (batch["label"] == batch["predicted_label"]).astype(float)
    return batch


def accuracy(group: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"label": [group["label"].iloc[0]], "accuracy": [group["correct"].mean()]})


def main() -> None:
    args = arguments(__doc__ or "")
    import ray.data

    import rayline
    from rayline import runtime

    folder = digits_folder(per_class=20 if args.smoke else None)
    epochs = "model.epochs=1" if args.smoke else "model.epochs=3"
    spec = rayline.load_spec(str(EXAMPLES / "mnist.yaml"), [f"data.source={folder}", epochs])
    run = rayline.train(spec)
    checkpoint = rayline.open_registry().checkpoint_dir(run.run_id)

    runtime.init()
    images = ray.data.read_images(str(folder), mode="L", include_paths=True, shuffle="files")  # shuffle 1: files
    predictions = images.map_batches(
        Classifier,
        fn_constructor_kwargs={"checkpoint": str(checkpoint)},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=256,
        num_cpus=1,  # one CPU for the actor, the other for read tasks: a pool taking both would hang
    )
    scored = predictions.map_batches(ground_truth, batch_format="pandas").materialize()
    print("accuracy:", round(scored.mean("correct"), 4))
    # One hash partition per digit (Ray's default is 200 partitions, mostly empty for ten labels).
    per_class = scored.groupby("label", num_partitions=10).map_groups(accuracy, batch_format="pandas").to_pandas()
    print(per_class.sort_values("label").to_string(index=False))
    print("block order shuffled:", scored.randomize_block_order(seed=0).take(1)[0]["path"])  # shuffle 2
    print("rows shuffled:", scored.random_shuffle(seed=0).take(1)[0]["path"])  # shuffle 3
    out = runtime.home() / "lesson4" / "predictions"
    scored.write_parquet(str(out))
    print("wrote", sum(1 for _ in out.glob("*.parquet")), "parquet files to", out)
    runtime.shutdown()


if __name__ == "__main__":
    main()
