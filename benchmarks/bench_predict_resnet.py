"""rayline predict on a PNG folder vs a plain PIL + torch loop, same checkpoint, whole commands.

A 1-epoch model is trained once, outside the timing. Then the commands alternate, each a fresh
process: ``rayline predict examples/mnist.yaml --model RUN --input DIR --out OUT`` (Ray Data
read_images -> actor pool -> parquet, at each ``--batch-sizes`` value of predict.batch_size)
and benchmarks/plain_predict_resnet.py (PIL decode, batches of 256, nothing written).
img/s = images / whole-command seconds (start-up, imports, Ray start included).

    .venv/bin/python benchmarks/bench_predict_resnet.py --repeats 3 --batch-sizes 256 1024
    .venv/bin/python benchmarks/bench_predict_resnet.py --quick     # 50 digits per class, once
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_train_resnet import ENV, SPEC, export_digits, train_once
from common import BIN, REPO, median, table, timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024], help="rayline predict.batch_size")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 digits per class, batch 256, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.batch_sizes = 1, [256]
    with tempfile.TemporaryDirectory(prefix="rl-bench-predict-") as name:
        tmp = Path(name)
        home = tmp / "home"
        digits = export_digits(tmp, 50 if args.quick else None)
        images = sum(1 for _ in digits.rglob("*.png"))
        run_id, checkpoint = train_once(home, digits, args.quick)
        env = {**ENV, "RAYLINE_HOME": str(home)}
        plain = [str(BIN / "python"), str(REPO / "benchmarks" / "plain_predict_resnet.py"), str(checkpoint)]
        plain += [str(digits), "256", "2"]
        walls: dict[str, list[float]] = {"plain": [], **{f"rayline {b}": [] for b in args.batch_sizes}}
        plain_loop: list[float] = []
        for _ in range(args.repeats):
            wall, out = timed(plain, ENV)
            walls["plain"].append(wall)
            result = json.loads(out.strip().splitlines()[-1])
            assert result["images"] == images, result
            plain_loop.append(result["loop_images_per_s"])
            for batch in args.batch_sizes:
                target = tmp / "predictions.parquet"
                cmd = [str(BIN / "rayline"), "predict", SPEC, "--model", run_id, "--input", str(digits)]
                cmd += ["--out", str(target), "--set", f"predict.batch_size={batch}"]
                wall, out = timed(cmd, env)
                if f"wrote {images:,} rows" not in out:
                    raise SystemExit(f"rayline predict did not write {images:,} rows:\n{out}")
                walls[f"rayline {batch}"].append(wall)
    base = images / median(walls["plain"])
    rows: list[list[object]] = []
    for name, values in walls.items():
        label = "plain PIL + torch loop (batch 256)" if name == "plain" else f"rayline predict (batch {name[8:]})"
        rate = images / median(values)
        rows.append([label, median(values), rate, rate / base])
    loop = median(plain_loop)
    print(f"{images:,} images, {args.repeats} repeat(s); plain decode+predict loop alone: {loop:,.0f} img/s")
    print("goal: rayline >= 0.9x plain (whole command)")
    print(table(["command", "whole command s", "img/s", "x plain"], rows))


if __name__ == "__main__":
    main()
