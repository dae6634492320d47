"""Lesson 1, the Ray AI Libraries end to end on taxi trips: read, split, train, tune, predict, serve.

The course wrote each step with Ray's APIs (XGBoostTrainer, Tuner, a predictor on Ray Data, a
Serve deployment). On current Ray several of those calls changed; rayline keeps the same steps
behind one spec, so the whole lesson is a few calls:

    python examples/lessons/lesson1_intro.py [--smoke]
"""

from __future__ import annotations

import json
import urllib.request

from _common import EXAMPLES, arguments

import rayline
from rayline import runtime


def main() -> None:
    args = arguments(__doc__ or "")
    # predict.engine=ray: the lesson's actor pool even where a small table would be predicted in-process.
    # --smoke: a pool of one actor and one replica (each is a process that loads the model).
    smoke = ["data.rows=5000", "model.num_boost_round=10", "tune.num_samples=2"] if args.smoke else []
    smoke += ["predict.concurrency=1", "serve.num_replicas=1"] if args.smoke else []
    spec = rayline.load_spec(str(EXAMPLES / "taxi.yaml"), [*smoke, "predict.engine=ray"])
    # Read + split (content-hash, reproducible) + train: in-process for small data, Ray Train for big.
    trained = rayline.train(spec)
    print("train:", trained.run_id, {k: round(v, 4) for k, v in trained.metrics.items() if k.startswith("valid_")})
    # Tune: a function trainable per trial (Train V2 no longer accepts Tuner(trainer)).
    tuned = rayline.tune(spec)
    print("tune: best config", tuned.best_config, "->", round(tuned.best_metrics[spec.metric], 4))
    # Offline batch prediction on a Ray Data actor pool, written to parquet.
    predicted = rayline.predict(spec, model="best")
    print("predict:", predicted.rows, "rows ->", predicted.output)
    # Online prediction with Ray Serve, then an HTTP request with one trip. A fresh Ray, so Serve's
    # HAProxy ingress (chosen when Ray starts) applies.
    runtime.shutdown()
    service = rayline.serve(spec, model="best", port=0)  # 0: any free port
    trip = {"passenger_count": 1, "trip_distance": 2.5, "fare_amount": 12.0, "trip_duration": 600}
    trip |= {"hour": 18, "day_of_week": 3}
    request = urllib.request.Request(f"{service.url}/predict", json.dumps([trip]).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        print("serve:", json.loads(resp.read())["predictions"])
    # The same deployment from Python, through its handle.
    print("handle:", service.handle.predict.remote([trip]).result(timeout_s=60))
    from rayline.serving.runner import shutdown

    shutdown()


if __name__ == "__main__":
    main()
