"""A tiny model family for tests: nearest class centroid on a table's numeric features.

It implements the whole family contract in a few lines (training loop, checkpoint, predictor,
trainer, tuning), so contract tests can run every stage on it in seconds, and it shows what a
new family has to provide. Its spec section is in ``tiny_spec`` (a family's spec module stays light:
the spec imports it while it loads). Registered only where asked (``tiny_spec.REGISTRATION``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline.checkpoints import checked_meta
from rayline.data.table_schema import TableLayout
from rayline.data.tables import encode_label, features_frame, output_frame, output_records
from rayline.families.base import LoopContext
from rayline.families.loop_checkpoints import report_again, report_checkpoint, resume_point
from rayline.spec import Spec
from rayline.testing.tiny_spec import TinyModelSpec

MODEL_FILE = "centroids.json"


def _matrix(frame: pd.DataFrame, layout: TableLayout) -> np.ndarray:
    x = features_frame(frame, layout)
    numeric = [c for c in layout.features if c not in layout.categorical]
    matrix: np.ndarray = np.nan_to_num(x[numeric].to_numpy(dtype=np.float64))
    return matrix


def _probabilities(x: np.ndarray, centroids: np.ndarray, scale: np.ndarray, temperature: float) -> np.ndarray:
    distances = (((x[:, None, :] - centroids[None, :, :]) / scale) ** 2).sum(axis=2)
    logits = -distances / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs


def train_tiny(config: Mapping[str, Any], ctx: LoopContext) -> None:
    spec = Spec.model_validate(config["spec"])
    model = spec.model
    assert isinstance(model, TinyModelSpec)
    layout = TableLayout.from_dict(config["layout"])
    point = resume_point(ctx)
    if point is not None:
        # One step, so its only checkpoint is the final one: the run had finished, unregistered.
        report_again(ctx, *point)
        return
    train, valid = ctx.frame("train"), ctx.frame("valid")
    x, y = _matrix(train, layout), encode_label(train[layout.label], layout)
    state: dict[str, Any] = {
        "scale": (x.std(axis=0) + 1e-9).tolist(),
        "temperature": model.temperature,
        "delay_s": model.delay_s,
    }
    vx, vy = _matrix(valid, layout), encode_label(valid[layout.label], layout)
    if layout.task == "regression":
        state["mean"] = float(y.mean())
        metrics = {"valid_loss": float(np.sqrt(((vy - state["mean"]) ** 2).mean()))}
    else:
        state["centroids"] = [x[y == k].mean(axis=0).tolist() for k in range(len(layout.classes))]
        probs = _probabilities(vx, np.asarray(state["centroids"]), np.asarray(state["scale"]), model.temperature)
        p_true = probs[np.arange(len(vy)), vy]
        metrics = {
            "valid_loss": float(-np.log(np.clip(p_true, 1e-15, 1)).mean()),
            "valid_accuracy": float((probs.argmax(axis=1) == vy).mean()),
        }
    metrics["round"] = 1.0
    meta = {"family": "tiny", "data_kind": "table", "layout": layout.to_dict()}
    report_checkpoint(ctx, metrics, meta, lambda folder: (folder / MODEL_FILE).write_text(json.dumps(state)))


class TinyPredictor:
    def __init__(self, checkpoint: Path) -> None:
        meta = checked_meta(checkpoint, MODEL_FILE, "tiny")
        self.layout = TableLayout.from_dict(meta["layout"])
        self.state = json.loads((checkpoint / MODEL_FILE).read_text())

    def _raw(self, x: np.ndarray) -> np.ndarray:
        """The mean label (regression), P(second class) (binary), or each class's probability."""
        if self.layout.task == "regression":
            return np.full(len(x), self.state["mean"])
        s = self.state
        probs = _probabilities(x, np.asarray(s["centroids"]), np.asarray(s["scale"]), s["temperature"])
        return probs[:, 1] if self.layout.task == "binary" else probs

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self._raw(_matrix(batch, self.layout)), self.layout)

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        # A slow model holds its replica as real work would (the event loop included).
        time.sleep(float(self.state.get("delay_s", 0.0)))
        return output_records(self._raw(_matrix(pd.DataFrame(items), self.layout)), self.layout)


class TinyFamily:
    name = "tiny"
    data_kind = TinyModelSpec.data_kind
    predict_batch_size = 1024
    step_key = "round"

    def reports(self, spec: Spec) -> int:
        return 1

    def train_loop(self, config: Mapping[str, Any], ctx: LoopContext) -> None:
        train_tiny(config, ctx)

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        return DataParallelTrainer(train_loop, **kwargs)

    def load(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> TinyPredictor:
        return TinyPredictor(checkpoint)

    def tunable(self, spec: Spec) -> set[str]:
        return {"temperature"}

    def with_trial(self, spec: Spec, trial: Mapping[str, Any]) -> Spec:
        return spec.model_copy(update={"model": spec.model.model_copy(update=dict(trial))})

    def importance(self, checkpoint: Path) -> dict[str, float]:
        return {}
