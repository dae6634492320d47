"""rayline predict on a PNG folder vs a plain PIL + torch loop, same checkpoint, whole commands.

A 1-epoch model is trained once, outside the timing. Then the commands alternate, each a fresh
process: ``rayline predict examples/mnist.yaml --model RUN --input DIR --out OUT`` with
``predict.engine`` auto (a local folder this size is decoded and classified in process) and
ray (Ray Data reads the files, decodes and classifies on an actor pool, writes parquet) and
benchmarks/plain_predict_resnet.py (PIL decode, batches of 256, nothing written), on the 5,000
digits and on a folder of ``--scale`` hard-linked copies of them. Also the in-process engine
with ``predict.precision: bfloat16`` (the plain loop stays float32: that row is rayline's
option, not its overhead).

Two rates per command: img/s of the whole command (start-up, imports, Ray start and MLflow
included) at each size, and the marginal rate, (N_big - N_small) / (T_big - T_small): what each
further image costs once the fixed costs are paid.

    .venv/bin/python benchmarks/bench_predict_resnet.py --repeats 2 --scale 10
    .venv/bin/python benchmarks/bench_predict_resnet.py --quick     # 50 digits per class, once
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench_train_resnet import ENV, SPEC, export_digits, train_once
from common import BIN, REPO, median, table, timed

# rayline's commands, each with its --set overrides (plain is always float32).
VARIANTS = {
    "rayline": ["predict.engine=auto"],
    "rayline-ray": ["predict.engine=ray"],
    "rayline-bf16": ["predict.engine=auto", "predict.precision=bfloat16"],
}


def linked_copies(digits: Path, target: Path, copies: int) -> Path:
    """``copies`` hard links of every digit (DIR/<label>/<copy>_<name>): more files, no more disk."""
    for label in sorted(p for p in digits.iterdir() if p.is_dir()):
        (target / label.name).mkdir(parents=True)
        for png in sorted(label.glob("*.png")):
            for k in range(copies):
                os.link(png, target / label.name / f"{k}_{png.name}")
    return target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scale", type=int, default=10, help="the big folder holds this many copies of the digits")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 digits per class, 2x, once")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.scale = 1, 2
    with tempfile.TemporaryDirectory(prefix="rl-bench-predict-") as name:
        tmp = Path(name)
        home = tmp / "home"
        small = export_digits(tmp, 50 if args.quick else None)
        big = linked_copies(small, tmp / "big", args.scale)
        sizes = {"small": (small, sum(1 for _ in small.rglob("*.png"))), "big": (big, 0)}
        sizes["big"] = (big, sizes["small"][1] * args.scale)
        run_id, checkpoint = train_once(home, small, args.quick)
        env = {**ENV, "RAYLINE_HOME": str(home)}
        walls: dict[tuple[str, str], list[float]] = {}
        loops: list[float] = []
        for _ in range(args.repeats):
            for size, (folder, images) in sizes.items():
                plain = [str(BIN / "python"), str(REPO / "benchmarks" / "plain_predict_resnet.py"), str(checkpoint)]
                wall, out = timed([*plain, str(folder), "256", "2"], ENV)
                result = json.loads(out.strip().splitlines()[-1])
                assert result["images"] == images, result
                loops.append(result["loop_images_per_s"])
                walls.setdefault(("plain", size), []).append(wall)
                cmd = [str(BIN / "rayline"), "predict", SPEC, "--model", run_id, "--input", str(folder)]
                cmd += ["--out", str(tmp / "predictions.parquet")]
                for who, sets in VARIANTS.items():
                    wall, out = timed([*cmd, *(a for kv in sets for a in ("--set", kv))], env)
                    if f"wrote {images:,} rows" not in out:
                        raise SystemExit(f"rayline predict did not write {images:,} rows:\n{out}")
                    walls.setdefault((who, size), []).append(wall)
    n_small, n_big = sizes["small"][1], sizes["big"][1]
    rows: list[list[object]] = []
    rates: dict[str, dict[str, float]] = {}
    commands = {
        "plain": "plain PIL + torch loop (batch 256, 2 threads)",
        "rayline": "rayline predict (engine auto: in process)",
        "rayline-ray": "rayline predict --set predict.engine=ray (actor pool)",
        "rayline-bf16": "rayline predict --set predict.precision=bfloat16 (in process)",
    }
    for who, label in commands.items():
        t_small, t_big = median(walls[(who, "small")]), median(walls[(who, "big")])
        rates[who] = {
            "small": n_small / t_small,
            "big": n_big / t_big,
            "marginal": (n_big - n_small) / (t_big - t_small),
        }
        rows.append([label, t_small, t_big, *rates[who].values()])
    for row, who in zip(rows, commands, strict=True):
        row += [rates[who][k] / rates["plain"][k] for k in ("small", "big", "marginal")]
    print(f"{n_small:,} and {n_big:,} images, {args.repeats} repeat(s); plain loop alone: {median(loops):,.0f} img/s")
    header = ["command", f"s @{n_small:,}", f"s @{n_big:,}", f"img/s @{n_small:,}", f"img/s @{n_big:,}"]
    header += ["marginal img/s", f"x plain @{n_small:,}", f"x plain @{n_big:,}", "x plain marginal"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
