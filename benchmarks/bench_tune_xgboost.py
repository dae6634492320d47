"""rayline tune: wall time of N trials vs ideal packing of the same trials' training work.

Ideal = sum over trials of each trial's own training seconds / CPUs (perfect packing, zero
overhead). "search wall" is data preparation + the Tune search; "with registry" adds logging the
tune run, every trial and the best checkpoint to MLflow. FIFO so every trial does its full work.

    .venv/bin/python benchmarks/bench_tune_xgboost.py --trials 8 --rows 200000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import REPO, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    os.environ["RAYLINE_HOME"] = tempfile.mkdtemp(prefix="rl-bench-tune-")
    os.environ.setdefault("RAYLINE_NUM_CPUS", "2")
    from rayline import load_spec, runtime
    from rayline.stages.tune import tune

    spec = load_spec(
        REPO / "examples" / "taxi.yaml",
        [
            f"data.rows={args.rows}",
            f"tune.num_samples={args.trials}",
            "tune.scheduler=fifo",
            f"model.num_boost_round={args.rounds}",
            "model.early_stopping_rounds=null",
        ],
    )
    cpus = runtime.init().cpus
    start = time.perf_counter()
    result = tune(spec)
    total = time.perf_counter() - start
    ideal = sum(result.trial_seconds) / cpus
    header = ["trials", "CPUs", "sum of trial work s", "ideal packing s", "search wall s", "x ideal"]
    header += ["with registry s", "x ideal"]
    row = [result.trials, cpus, sum(result.trial_seconds), ideal, result.seconds, result.seconds / ideal]
    print(table(header, [[*row, total, total / ideal]]))


if __name__ == "__main__":
    main()
