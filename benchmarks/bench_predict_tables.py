"""rayline predict on a big parquet table vs a plain pyarrow + booster script, whole commands (issue 30).

A taxi model is trained once per family (examples/taxi.yaml: xgboost; examples/taxi-lightgbm.yaml),
outside the timing, and ``rayline data taxi --rows N`` writes each input. Then the commands
alternate, each a fresh process:

- plain: benchmarks/plain_predict_tables.py (pyarrow batches, the checkpoint's MinMax scaling in
  float64, the booster on 2 threads, a streaming ParquetWriter of every input column,
  ``probability`` and ``predicted_label``);
- ``rayline predict SPEC --model RUN --input big.parquet --out preds.parquet`` with
  ``--set predict.engine=local`` (in this process) and ``=ray`` (the actor pool);
- Ray's start alone (``rayline.runtime.init()`` in a fresh process), reported apart: the pool's
  figure includes it.

With ``--commands predict,evaluate`` evaluation is timed the same way, alternated with the
rest: benchmarks/plain_evaluate_tables.py (the same read, scaling and booster, each batch reduced
with numpy to accuracy, log loss, histogram AUC, per-class accuracy and the confusion matrix)
against ``rayline evaluate SPEC --model RUN --input big.parquet`` on both engines; rayline's
printed metrics must equal the plain script's (to the 4 decimals it prints), or the run stops.

Each command's wall time and its own peak RSS (``wait4``; for the pool, the driver only: Ray's
workers are not its children) are kept; the table gives medians and the ratio to plain.

    .venv/bin/python benchmarks/bench_predict_tables.py --rows 5000000,20000000 --repeats 3
    .venv/bin/python benchmarks/bench_predict_tables.py --quick      # 200k rows, xgboost, once
    .venv/bin/python benchmarks/bench_predict_tables.py --rows 20000000 --families xgboost --commands evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BIN, REPO, median, table

ENV = {"RAYLINE_NUM_CPUS": "2"}
SPECS = {"xgboost": "examples/taxi.yaml", "lightgbm": "examples/taxi-lightgbm.yaml"}
ENGINES = ("local", "ray")
COMMANDS = ("predict", "evaluate")
METRIC_LINE = re.compile(r"^\s+(accuracy|logloss|auc)\s+(-?[0-9.]+)\s*$", re.MULTILINE)


def run(cmd: list[str], env: dict[str, str], timeout: float = 1800) -> tuple[float, float, str]:
    """Wall seconds, the process's own peak RSS (bytes) and its stdout; fails loudly on a non-zero exit."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **env}, text=True)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise SystemExit(f"{' '.join(cmd)}: timed out")
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stdout[-2000:]}\n{err.read()[-3000:]}")
    return wall, usage.ru_maxrss * 1024.0, stdout


def train_once(home: Path, family: str) -> tuple[str, Path]:
    _, _, out = run([str(BIN / "rayline"), "train", str(REPO / SPECS[family])], {**ENV, "RAYLINE_HOME": str(home)})
    found = re.search(r"\brun ([0-9a-f]{32})\b", out)
    if found is None:
        raise SystemExit(f"no run id in rayline's output:\n{out}")
    from rayline.registry import Registry

    return found.group(1), Registry(home).checkpoint_dir(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="5000000,20000000", help="input sizes, comma-separated")
    ap.add_argument("--families", default="xgboost,lightgbm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 200k rows, xgboost, once")
    ap.add_argument("--commands", default="predict", help="predict and/or evaluate, comma-separated")
    args = ap.parse_args()
    commands = args.commands.split(",")
    if not set(commands) <= set(COMMANDS):
        ap.error(f"--commands: one or more of {', '.join(COMMANDS)}")
    if args.quick:
        args.rows, args.families, args.repeats = "200000", "xgboost", 1
    sizes = [int(n) for n in args.rows.split(",")]
    families = args.families.split(",")
    with tempfile.TemporaryDirectory(prefix="rl-bench-tables-") as name:
        tmp = Path(name)
        home = tmp / "home"
        env = {**ENV, "RAYLINE_HOME": str(home)}
        models = {family: train_once(home, family) for family in families}
        inputs = {}
        for n in sizes:
            inputs[n] = tmp / f"taxi-{n}.parquet"
            run([str(BIN / "rayline"), "data", "taxi", "--rows", str(n), "--out", str(inputs[n])], env)
        walls: dict[tuple[str, str, str, int], list[float]] = {}
        rss: dict[tuple[str, str, str, int], list[float]] = {}
        ray_start: list[float] = []
        for _ in range(args.repeats):
            start_ray = "import time; t = time.perf_counter(); from rayline import runtime; runtime.init(); "
            start_ray += "print(time.perf_counter() - t)"
            _, _, said = run([str(BIN / "python"), "-c", start_ray], env)
            ray_start.append(float(said.strip().splitlines()[-1]))
            for n in sizes:
                for family, (run_id, checkpoint) in models.items():
                    for command in commands:
                        timed_command(command, family, run_id, checkpoint, inputs[n], n, tmp, env, walls, rss)
    rows: list[list[object]] = []
    labels = {"plain": "plain script", "local": "rayline, in process", "ray": "rayline, actor pool"}
    for command in commands:
        for n in sizes:
            for family in families:
                base = median(walls[(command, "plain", family, n)])
                for who, label in labels.items():
                    key = (command, who, family, n)
                    span = f"{min(walls[key]):.1f}-{max(walls[key]):.1f}"
                    cells: list[object] = [f"{n:,}", family, label, median(walls[key]), span]
                    rows.append([*cells, median(walls[key]) / base, median(rss[key]) / 1e9])
    print(f"{args.repeats} repeat(s) alternated; Ray's start alone: {median(ray_start):.1f} s (median)")
    header = ["rows", "family", "command", "median s", "range s", "x plain", "peak RSS GB (own process)"]
    per_command = len(rows) // len(commands)
    for i, command in enumerate(commands):
        if len(commands) > 1:
            print(f"\nrayline {command}:")
        print(table(header, rows[i * per_command : (i + 1) * per_command]))


def timed_command(
    command: str,
    family: str,
    run_id: str,
    checkpoint: Path,
    source: Path,
    n: int,
    tmp: Path,
    env: dict[str, str],
    walls: dict[tuple[str, str, str, int], list[float]],
    rss: dict[tuple[str, str, str, int], list[float]],
) -> None:
    """The plain script, then rayline on each engine, for one command; each checked, each timed."""
    plain = [str(BIN / "python"), str(REPO / "benchmarks" / f"plain_{command}_tables.py"), str(checkpoint)]
    plain += [str(source), str(tmp / "plain.parquet"), "2"] if command == "predict" else [str(source), "2"]
    wall, peak, said = run(plain, env)
    baseline = json.loads(said.strip().splitlines()[-1])
    assert baseline["rows"] == n, said
    walls.setdefault((command, "plain", family, n), []).append(wall)
    rss.setdefault((command, "plain", family, n), []).append(peak)
    for engine in ENGINES:
        cmd = [str(BIN / "rayline"), command, str(REPO / SPECS[family]), "--model", run_id, "--input", str(source)]
        if command == "predict":
            cmd += ["--out", str(tmp / f"{engine}.parquet")]
        wall, peak, said = run([*cmd, "--set", f"predict.engine={engine}"], env)
        if command == "predict" and f"wrote {n:,} rows" not in said:
            raise SystemExit(f"rayline predict did not write {n:,} rows:\n{said}")
        if command == "evaluate":
            check_metrics(said, baseline, n)
        walls.setdefault((command, engine, family, n), []).append(wall)
        rss.setdefault((command, engine, family, n), []).append(peak)


def check_metrics(said: str, baseline: dict[str, Any], n: int) -> None:
    """rayline evaluate's printed metrics (4 decimals) against the plain script's; stops on a difference."""
    printed = {name: float(value) for name, value in METRIC_LINE.findall(said)}
    expected = baseline["metrics"]
    differ = [k for k in expected if k not in printed or abs(printed[k] - expected[k]) > 5.1e-5]
    if f"on {n:,} rows" not in said or differ or set(printed) != set(expected):
        raise SystemExit(f"rayline evaluate disagrees with the plain script on {differ or 'rows'}:\n{said}\n{expected}")


if __name__ == "__main__":
    main()
