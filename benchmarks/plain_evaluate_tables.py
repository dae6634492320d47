"""The plain evaluation script rayline evaluate is measured against (issue 30).

Reads a parquet table's features and label in pyarrow batches, applies the checkpoint's MinMax
scaling in float64 (as training does), predicts with the booster on ``threads`` threads
(xgboost's ``inplace_predict``, LightGBM's ``predict``) and reduces each batch with numpy to the
metrics ``rayline evaluate`` reports for a binary model (``rayline.stages.tally``): accuracy,
log loss (probabilities clipped to [1e-15, 1]), AUC from two 10,000-bin score histograms (ties
within a bin count one half), per-class accuracy and the confusion matrix. Memory holds a batch,
as the plain prediction script's does. Binary tasks without categorical features.

    python benchmarks/plain_evaluate_tables.py CHECKPOINT INPUT.parquet [THREADS] [BATCH_ROWS]

Prints one JSON line: rows, the metrics, seconds and this process's peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from plain_booster import load_raw, scaled_matrix

BINS = 10_000
EPS = 1e-15


def main() -> None:
    checkpoint, source = Path(sys.argv[1]), sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    batch_rows = int(sys.argv[4]) if len(sys.argv) > 4 else 262_144
    start = time.perf_counter()
    layout = json.loads((checkpoint / "meta.json").read_text())["layout"]
    features, scaler, classes, label = layout["features"], layout["scaler"], layout["classes"], layout["label"]
    raw = load_raw(checkpoint, threads)

    rows, correct, logloss = 0, 0.0, 0.0
    confusion = np.zeros(4, dtype=np.int64)  # truth * 2 + predicted
    pos, neg = np.zeros(BINS, dtype=np.int64), np.zeros(BINS, dtype=np.int64)
    for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_rows, columns=[*features, label]):
        x = scaled_matrix(batch, features, scaler)
        p = raw(x).astype(np.float64)
        truth = batch.column(label).to_numpy(zero_copy_only=False)
        codes = np.full(len(truth), -1, dtype=np.int64)
        for i, value in enumerate(classes):
            codes[truth == value] = i
        if (codes < 0).any():
            raise SystemExit(f"label {truth[codes < 0][0]!r} is not one of the model's classes {classes}")
        predicted = (p >= 0.5).astype(np.int64)
        correct += float((predicted == codes).sum())
        logloss += float(-np.log(np.clip(np.where(codes == 1, p, 1.0 - p), EPS, 1.0)).sum())
        confusion += np.bincount(codes * 2 + predicted, minlength=4)
        bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
        pos += np.bincount(bins[codes == 1], minlength=BINS)
        neg += np.bincount(bins[codes == 0], minlength=BINS)
        rows += batch.num_rows
    metrics: dict[str, Any] = {"accuracy": correct / rows, "logloss": logloss / rows}
    if pos.sum() and neg.sum():  # Mann-Whitney over the histograms: ties within a bin count one half
        metrics["auc"] = float((pos * (np.cumsum(neg) - neg + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
    names = [str(c) for c in classes]
    per_class = {
        names[t]: float(confusion[t * 2 + t] / confusion[t * 2 : t * 2 + 2].sum())
        for t in range(2)
        if confusion[t * 2 : t * 2 + 2].sum()
    }
    matrix = {names[t]: {names[q]: int(confusion[t * 2 + q]) for q in range(2)} for t in range(2)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "rows": rows,
                "metrics": metrics,
                "per_class_accuracy": per_class,
                "confusion_matrix": matrix,
                "seconds": time.perf_counter() - start,
                "peak_rss": peak,
            }
        )
    )


if __name__ == "__main__":
    main()
