"""The plain DDP baseline: ``plain_train_resnet.py``'s loop on 2 processes (torch DDP, gloo, one
thread each), no Ray. Each rank trains on its half of the training images with batches of the
same size as the single process; loop img/s counts the images of both ranks over the slower
rank's loop seconds (validation excluded). Prints one JSON line, as the single-process script.

    python benchmarks/plain_ddp_resnet.py DIR EPOCHS [BATCH] [LR] [WORLD]
"""

from __future__ import annotations

import time

start = time.perf_counter()
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from plain_train_resnet import load, tensor  # noqa: E402
from torch import nn  # noqa: E402

from rayline.families.resnet.family import build_model  # noqa: E402


def rank_main(rank: int, world: int, folder: str, epochs: int, batch: int, lr: float, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(42)
    images, labels, classes, train, _, rng = load(Path(folder))
    train = train[rank::world]
    model = nn.parallel.DistributedDataParallel(build_model(len(classes), 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loop_s, seen = 0.0, 0
    steps = len(train) // batch  # the same number of steps on every rank (DDP all-reduces each one)
    for _ in range(epochs):
        model.train()
        shuffled = rng.permutation(train)
        dist.barrier()
        t0 = time.perf_counter()
        for i in range(steps):
            idx = shuffled[i * batch : (i + 1) * batch]
            x, y = tensor(images[idx]), torch.from_numpy(labels[idx])
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            seen += len(idx)
        loop_s += time.perf_counter() - t0
    totals = torch.tensor([float(seen), loop_s])
    slowest = torch.tensor([loop_s])
    dist.all_reduce(totals)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    if rank == 0:
        Path(out).write_text(
            json.dumps({"images_per_s": float(totals[0]) / float(slowest[0]), "loop_s": float(slowest[0])})
        )
    dist.destroy_process_group()


def main() -> None:
    folder, epochs = sys.argv[1], int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
    world = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        mp.spawn(rank_main, args=(world, folder, epochs, batch, lr, port, out.name), nprocs=world, join=True)
        result = json.loads(Path(out.name).read_text())
    result["total_s"] = time.perf_counter() - start
    print(json.dumps(result))


if __name__ == "__main__":
    main()
