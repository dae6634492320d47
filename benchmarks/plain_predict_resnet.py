"""The plain batch-inference baseline: PIL-decode every PNG under DIR, predict with the same checkpoint.

Batches of 256 through ``ResNetPredictor.probabilities`` (the checkpoint loaded as rayline loads
it), keeping only the predicted class per image. Prints one JSON line: images, img/s of the
decode+predict loop, and the script's total seconds from its first line.

    python benchmarks/plain_predict_resnet.py CHECKPOINT_DIR DIR [BATCH] [THREADS]
"""

from __future__ import annotations

import time

start = time.perf_counter()
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from rayline.families import get_family  # noqa: E402
from rayline.families.resnet.family import ResNetPredictor  # noqa: E402


def main() -> None:
    checkpoint, folder = Path(sys.argv[1]), Path(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    predictor = get_family("resnet18").load(checkpoint, cpus=threads)
    assert isinstance(predictor, ResNetPredictor)
    files = sorted(folder.rglob("*.png"))
    loop_start = time.perf_counter()
    predicted: list[np.ndarray] = []
    for i in range(0, len(files), batch):
        images = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.uint8) for p in files[i : i + batch]])
        predicted.append(predictor.probabilities(images[:, None]).argmax(axis=1))
    loop_s = time.perf_counter() - loop_start
    counts = np.bincount(np.concatenate(predicted), minlength=10)
    result = {
        "images": len(files),
        "loop_images_per_s": len(files) / loop_s,
        "predicted_per_class": counts.tolist(),
        "total_s": time.perf_counter() - start,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
