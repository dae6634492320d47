"""The GPU paths, on a machine with a CUDA GPU: training in-process and on Ray Train workers
sharing one GPU, Tune trials sharing it, batch inference and serving on fractional GPUs.

Skipped where torch sees no GPU (CI has none); docs/gpu.md says how they were run on one.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import imagesets
from rayline.registry import open_registry
from rayline.spec import Spec
from rayline.stages.evaluate import evaluate
from rayline.stages.predict import predict
from rayline.stages.train import train
from rayline.stages.tune import tune
from service import call, serving

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def colour_spec(tmp_path: Path, name: str, **sections: Any) -> Spec:
    source = tmp_path / "colours"
    if not source.exists():
        imagesets.colours(source, per_class=20)
    raw: dict[str, Any] = {"data": {"image": {"mode": "RGB", "size": [20, 30]}}, "model": {"epochs": 3}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return imagesets.spec_for(source, name=name, **raw)


def trained_on(run_id: str) -> str:
    """The device the run's model was trained on, as its checkpoint records it."""
    meta = json.loads((open_registry().checkpoint_dir(run_id) / "meta.json").read_text())
    return str(meta["device"])


def learned(history: list[dict[str, float]]) -> bool:
    """The training loss fell from the first epoch to the last (the history ends with the best epoch again)."""
    losses = [h["train_loss"] for h in history if "train_loss" in h and "best_epoch" not in h]
    return len(losses) >= 2 and losses[-1] < losses[0]


def test_in_process_training_runs_on_the_gpu(tmp_path: Path) -> None:
    result = train(colour_spec(tmp_path, "gpu-local", scaling={"use_gpu": True}))

    assert result.path == "local"
    assert trained_on(result.run_id).startswith("cuda")
    assert learned(result.history)


@pytest.mark.parametrize(("workers", "share"), [(1, 1.0), (2, 0.5)])
def test_ray_train_workers_run_on_the_gpu(ray_session: object, tmp_path: Path, workers: int, share: float) -> None:
    scaling = {"num_workers": workers, "use_gpu": True, "gpus_per_worker": share}
    result = train(colour_spec(tmp_path, f"gpu-ddp-{workers}", scaling=scaling))

    assert result.path == f"ray-train:{workers}"
    assert trained_on(result.run_id).startswith("cuda")
    assert learned(result.history)


def test_tune_trials_share_the_gpu(ray_session: object, tmp_path: Path) -> None:
    spec = colour_spec(
        tmp_path,
        "gpu-tune",
        scaling={"use_gpu": True, "gpus_per_worker": 0.5},
        tune={"num_samples": 2, "space": {"lr": {"loguniform": [0.001, 0.005]}}},
    )
    result = tune(spec)

    assert result.trials == 2
    assert trained_on(result.best_run_id).startswith("cuda")


def test_predict_and_evaluate_on_fractional_gpus(ray_session: object, tmp_path: Path) -> None:
    spec = colour_spec(tmp_path, "gpu-predict", scaling={"use_gpu": True}, predict={"engine": "local"})
    trained = train(spec)
    local = predict(spec, model=trained.run_id, output=str(tmp_path / "local.parquet"))
    pooled_spec = colour_spec(tmp_path, "gpu-predict", predict={"engine": "ray", "num_gpus": 0.5, "concurrency": 2})

    pooled = predict(pooled_spec, model=trained.run_id, output=str(tmp_path / "pooled.parquet"))

    assert (local.engine, pooled.engine) == ("local", "ray")
    a = pd.read_parquet(local.output).sort_values("path").reset_index(drop=True)
    b = pd.read_parquet(pooled.output).sort_values("path").reset_index(drop=True)
    assert len(b) == pooled.rows > 0
    assert list(a["predicted_label"]) == list(b["predicted_label"])
    np.testing.assert_allclose(np.stack(a["probabilities"]), np.stack(b["probabilities"]), atol=1e-4)
    evaluation = evaluate(pooled_spec, model=trained.run_id)
    assert evaluation.metrics["accuracy"] == pytest.approx(trained.metrics["valid_accuracy"], abs=1e-6)


def test_serving_replicas_share_the_gpu(tmp_path: Path) -> None:
    spec = colour_spec(tmp_path, "gpu-serve", scaling={"use_gpu": True}, predict={"engine": "local"})
    trained = train(spec)
    offline = pd.read_parquet(predict(spec, model=trained.run_id).output).head(6)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    args = [str(spec_file), "--model", trained.run_id, "--set", "serve.num_gpus=0.5", "--set", "serve.num_replicas=2"]

    with serving(args, dict(os.environ)) as (url, _):
        images = [base64.b64encode(Path(p).read_bytes()).decode() for p in offline["path"]]
        status, body = call(f"{url}/predict", json.dumps({"image": images}).encode())

    assert status == 200, body
    assert [p["label"] for p in body["predictions"]] == list(offline["predicted_label"])
    np.testing.assert_allclose([p["probability"] for p in body["predictions"]], offline["probability"], atol=1e-4)
