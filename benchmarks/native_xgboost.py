"""The plain baseline: read parquet with pyarrow, build DMatrix, xgboost.train. Prints JSON timings."""

from __future__ import annotations

import json
import sys
import time

start = time.perf_counter()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import xgboost  # noqa: E402

path, rounds, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
frame = pq.read_table(path).to_pandas()
rng = np.random.default_rng(42)
valid = rng.random(len(frame)) < 0.3
label = "is_big_tip"
features = [c for c in frame.columns if c != label]
dtrain = xgboost.DMatrix(frame.loc[~valid, features], label=frame.loc[~valid, label].astype(int), nthread=threads)
dvalid = xgboost.DMatrix(frame.loc[valid, features], label=frame.loc[valid, label].astype(int), nthread=threads)
params = {
    "objective": "binary:logistic",
    "eval_metric": ["error", "logloss"],
    "max_depth": 6,
    "eta": 0.3,
    "tree_method": "hist",
    "nthread": threads,
}
boost_start = time.perf_counter()
booster = xgboost.train(params, dtrain, rounds, evals=[(dvalid, "valid")], verbose_eval=False)
boost = time.perf_counter() - boost_start
booster.save_model("/tmp/rayline-bench-native.ubj")
print(json.dumps({"boost_s": boost, "total_s": time.perf_counter() - start, "pd": pd.__version__}))
