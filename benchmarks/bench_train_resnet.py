"""rayline train on the MNIST digits (in-process fast path and Ray Train DDP) vs a plain torch script.

ResNet18 with a 1-channel stem on the 5,000 digits (builtin:mnist, 28x28 L), batch 64, Adam
lr 1e-3, 2 epochs, 2 CPUs. The commands alternate, each a fresh process, so whole-command time
includes Python start-up, imports, decoding the PNGs and (for Ray Train) starting Ray. Loop img/s
counts only the training loops: rayline's per-epoch ``train_images_per_s`` from the run's MLflow
history, combined as total images / total loop seconds; the plain script measures it the same way.

    .venv/bin/python benchmarks/bench_train_resnet.py --epochs 2 --repeats 3
    .venv/bin/python benchmarks/bench_train_resnet.py --quick     # 50 digits per class, 1 epoch, once
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path

from common import BIN, REPO, median, table, timed

SPEC = str(REPO / "examples" / "mnist.yaml")
ENV = {"RAYLINE_NUM_CPUS": "2"}


def export_digits(tmp: Path, per_class: int | None) -> Path:
    """The digits as DIR/<label>/<index>.png under ``tmp/home/data/mnist`` (where builtin:mnist
    looks); with ``per_class``, a copy of the first ``per_class`` files of each label beside it."""
    from rayline.datasets.mnist import export_png

    full = export_png(tmp / "home" / "data" / "mnist")
    if per_class is None:
        return full
    small = tmp / f"mnist-{per_class}"
    for label in sorted(p for p in full.iterdir() if p.is_dir()):
        (small / label.name).mkdir(parents=True)
        for png in sorted(label.glob("*.png"))[:per_class]:
            shutil.copy(png, small / label.name / png.name)
    return small


def source_sets(digits: Path, quick: bool) -> list[str]:
    """``--set`` arguments that point a spec at ``digits`` (nothing for the full builtin set)."""
    return ["--set", f"data.source={digits}"] if quick else []


def run_id_of(stdout: str) -> str:
    found = re.search(r"\brun ([0-9a-f]{32})\b", stdout)
    if found is None:
        raise SystemExit(f"no run id in rayline's output:\n{stdout}")
    return found.group(1)


def train_once(home: Path, digits: Path, quick: bool, epochs: int = 1) -> tuple[str, Path]:
    """Train a model outside any timing; returns (run id, local checkpoint folder)."""
    cmd = [str(BIN / "rayline"), "train", SPEC, "--set", f"model.epochs={epochs}", *source_sets(digits, quick)]
    _, out = timed(cmd, {**ENV, "RAYLINE_HOME": str(home)})
    run_id = run_id_of(out)
    from rayline.registry import Registry

    return run_id, Registry(home).checkpoint_dir(run_id)


def loop_images_per_s(home: Path, run_id: str, epochs: int) -> float:
    """Total images / total loop seconds over the run's epochs (the harmonic mean of the epochs' rates).

    The run's final ``train_images_per_s`` is the best epoch's; the history has one value per
    epoch at step = epoch, then the final copy one step later, which is left out here.
    """
    from rayline.registry import Registry

    history = Registry(home).client.get_metric_history(run_id, "train_images_per_s")
    rates = [m.value for m in history if 1 <= m.step <= epochs]
    if len(rates) != epochs:
        raise SystemExit(f"run {run_id}: expected {epochs} epochs of train_images_per_s, found {len(rates)}")
    return len(rates) / sum(1.0 / r for r in rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="2", help="Ray Train workers for the DDP path ('' skips it)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 digits per class, 1 epoch, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.repeats = 1, 1
    with tempfile.TemporaryDirectory(prefix="rl-bench-resnet-") as name:
        tmp = Path(name)
        home = tmp / "home"
        digits = export_digits(tmp, 50 if args.quick else None)
        env = {**ENV, "RAYLINE_HOME": str(home)}
        plain = [str(BIN / "python"), str(REPO / "benchmarks" / "plain_train_resnet.py"), str(digits)]
        plain += [str(args.epochs), "64", "0.001", "2"]

        def rayline(workers: str) -> list[str]:
            cmd = [str(BIN / "rayline"), "train", SPEC, "--set", f"model.epochs={args.epochs}"]
            return [*cmd, "--set", f"scaling.num_workers={workers}", *source_sets(digits, args.quick)]

        # warm-up: creates the MLflow store and fills the page cache for both sides
        train_once(home, digits, args.quick)
        ddp = [str(BIN / "python"), str(REPO / "benchmarks" / "plain_ddp_resnet.py"), str(digits)]
        ddp += [str(args.epochs), "64", "0.001", args.workers or "2"]
        names = ["plain", "local"] + (["plain_ddp", "workers"] if args.workers else [])
        walls: dict[str, list[float]] = {n: [] for n in names}
        rates: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.repeats):
            wall, out = timed(plain, ENV)
            walls["plain"].append(wall)
            rates["plain"].append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
            if "plain_ddp" in walls:
                wall, out = timed(ddp, ENV)
                walls["plain_ddp"].append(wall)
                rates["plain_ddp"].append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
            for name, workers in (("local", "auto"), ("workers", args.workers)):
                if name in walls:
                    wall, out = timed(rayline(workers), env)
                    walls[name].append(wall)
                    rates[name].append(loop_images_per_s(home, run_id_of(out), args.epochs))
    base_wall, base_rate = median(walls["plain"]), median(rates["plain"])
    labels = {
        "plain": "plain torch script (1 process, 2 threads)",
        "local": "rayline train (auto: in-process)",
        "plain_ddp": f"plain torch DDP script ({args.workers} processes, gloo, 1 thread each)",
        "workers": f"rayline train ({args.workers} Ray Train DDP workers)",
    }
    rows = []
    for name in names:
        w, r = median(walls[name]), median(rates[name])
        rows.append([labels[name], w, base_wall / w, r, r / base_rate])
    print(f"{args.epochs} epoch(s), {args.repeats} repeat(s); goals: loop >= 0.9x plain, whole command >= 0.7x")
    print(table(["command", "whole command s", "throughput x plain", "loop img/s", "x plain"], rows))


if __name__ == "__main__":
    main()
