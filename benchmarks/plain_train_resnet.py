"""The plain training baseline: PIL-decode a DIR/<label>/<file>.png tree, train ResNet18 in one process.

Same model as rayline (``build_model(10, 1)``), same normalization ((x/255 - 0.5) / 0.5), Adam,
shuffled batches, an 80/20 split and one validation pass per epoch. Prints one JSON line:
loop img/s (training images / seconds inside the training loops, validation excluded) and
the script's total seconds from its first line.

    python benchmarks/plain_train_resnet.py DIR EPOCHS [BATCH] [LR] [THREADS]
"""

from __future__ import annotations

import time

start = time.perf_counter()
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from rayline.families.resnet.family import build_model  # noqa: E402


def tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div_(255.0).sub_(0.5).div_(0.5)


def load(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray, np.random.Generator]:
    """Images [N, 1, H, W] uint8, labels, classes, the train and validation indices, and the rng."""
    files = sorted(folder.glob("*/*.png"))
    classes = sorted({p.parent.name for p in files})
    index = {c: i for i, c in enumerate(classes)}
    images = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.uint8) for p in files])[:, None]
    labels = np.array([index[p.parent.name] for p in files], dtype=np.int64)
    rng = np.random.default_rng(42)
    order = rng.permutation(len(files))
    n_valid = round(0.2 * len(files))
    return images, labels, classes, order[n_valid:], order[:n_valid], rng


def main() -> None:
    folder, epochs = Path(sys.argv[1]), int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    images, labels, classes, train, valid, rng = load(folder)

    model = build_model(len(classes), 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loop_s, seen, accuracy = 0.0, 0, 0.0
    for _ in range(epochs):
        model.train()
        shuffled = rng.permutation(train)
        t0 = time.perf_counter()
        for i in range(0, len(shuffled), batch):
            idx = shuffled[i : i + batch]
            x, y = tensor(images[idx]), torch.from_numpy(labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            seen += len(idx)
        loop_s += time.perf_counter() - t0
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(valid), 256):
                idx = valid[i : i + 256]
                correct += int((model(tensor(images[idx])).argmax(1) == torch.from_numpy(labels[idx])).sum())
        accuracy = correct / max(1, len(valid))
    with tempfile.TemporaryDirectory(prefix="plain-train-") as tmp:
        torch.save(model.state_dict(), Path(tmp) / "model.pt")
    result = {
        "images_per_s": seen / loop_s,
        "loop_s": loop_s,
        "train_images": len(train),
        "valid_accuracy": accuracy,
        "total_s": time.perf_counter() - start,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
