"""The plain batch-prediction script rayline predict is measured against (issue 30).

Reads a parquet table in pyarrow batches, applies the checkpoint's MinMax scaling in float64
(as training does), predicts with the booster on ``threads`` threads (xgboost's
``inplace_predict``, LightGBM's ``predict``) and writes every input column, ``probability`` and
``predicted_label`` with a streaming ``ParquetWriter``. Binary tasks without categorical features.

    python benchmarks/plain_predict_tables.py CHECKPOINT INPUT.parquet OUT.parquet [THREADS] [BATCH_ROWS]

Prints one JSON line: rows, seconds and this process's peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from plain_booster import load_raw, scaled_matrix


def main() -> None:
    checkpoint, source, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    batch_rows = int(sys.argv[5]) if len(sys.argv) > 5 else 262_144
    start = time.perf_counter()
    meta = json.loads((checkpoint / "meta.json").read_text())
    layout = meta["layout"]
    features, scaler, classes = layout["features"], layout["scaler"], layout["classes"]
    raw = load_raw(checkpoint, threads)

    rows = 0
    writer: pq.ParquetWriter | None = None
    for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_rows):
        x = scaled_matrix(batch, features, scaler)
        p = raw(x).astype(np.float64)
        label = np.where(p >= 0.5, classes[1], classes[0])
        table = pa.Table.from_batches([batch]).append_column("probability", pa.array(p))
        table = table.append_column("predicted_label", pa.array(label))
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        rows += batch.num_rows
    if writer is not None:
        writer.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start, "peak_rss": peak}))


if __name__ == "__main__":
    main()
