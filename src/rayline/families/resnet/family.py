"""torchvision ResNet18 on images: the training loop, checkpoint format and predictor.

The first convolution is swapped for one taking the images' channels (the course's swap for
1-channel MNIST). Checkpoint folder: ``model.pt`` (the ``state_dict`` only, loaded with
``torch.load(weights_only=True)``: no pickled code) and ``meta.json`` (family, image layout
with the class names by index, normalization, final metrics).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from rayline.checkpoints import checked_meta, write_meta
from rayline.data.image_codec import ImageLayout, normalize
from rayline.errors import DataError, TrainError
from rayline.families.base import LoopContext
from rayline.families.loop_checkpoints import finished, report_again, report_checkpoint, resume_point
from rayline.families.resnet.spec import ResNetModelSpec
from rayline.spec import Spec

MODEL_FILE = "model.pt"
# In periodic checkpoints only: what a resumed run needs beyond the weights (the optimizer's
# moments, the epoch, the best epoch so far and its weights when they are not these).
STATE_FILE = "train_state.pt"
_TUNABLE = {"lr", "batch_size", "epochs"}
_EPOCH_METRICS = {"train_loss", "valid_loss", "valid_accuracy"}


def build_model(num_classes: int, channels: int) -> nn.Module:
    from torchvision.models import resnet18

    model: nn.Module = resnet18(weights=None, num_classes=num_classes)
    # The course's swap: ResNet18's stem expects RGB; grayscale digits have one channel.
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
    return model


def _device(use_gpu: bool) -> torch.device:
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def _tensor(
    images: np.ndarray, layout: ImageLayout, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return torch.from_numpy(normalize(images, layout)).to(device, dtype, non_blocking=True)


# ------------------------------------------------------------------------------ training
def _evaluate(
    model: nn.Module, ctx: LoopContext, layout: ImageLayout, batch_size: int, device: torch.device
) -> tuple[float, float, int]:
    """(summed loss, correct, count) over this worker's share of the validation split."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for batch in ctx.batches("valid", batch_size, shuffle=False):
            x = _tensor(batch["image"], layout, device)
            y = torch.from_numpy(np.asarray(batch["label"], dtype=np.int64)).to(device)
            logits = model(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    return loss_sum, correct, count


def _all_reduce(values: list[float], ctx: LoopContext, device: torch.device) -> list[float]:
    """Sum over Ray Train workers (each evaluated its own shard)."""
    if ctx.world_size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def save_checkpoint(
    model: nn.Module, meta: Mapping[str, Any], folder: Path, train_state: Mapping[str, Any] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _save(model, folder, train_state)
    write_meta(folder, meta)
    return folder


def _save(model: nn.Module, folder: Path, train_state: Mapping[str, Any] | None = None) -> None:
    inner = getattr(model, "module", model)  # DDP wraps the model
    torch.save({k: v.detach().cpu() for k, v in inner.state_dict().items()}, folder / MODEL_FILE)
    if train_state is not None:
        torch.save(dict(train_state), folder / STATE_FILE)


def _cpu(state: Mapping[str, Any]) -> Any:
    """A state dict's tensors on the CPU (optimizer states nest them)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, Mapping):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_cpu(v) for v in state)
    return state


def train_resnet(config: Mapping[str, Any], ctx: LoopContext) -> None:
    """The loop shared by the in-process, Tune-trial and Ray Train (DDP) paths."""
    spec = Spec.model_validate(config["spec"])
    model_spec = spec.model
    assert isinstance(model_spec, ResNetModelSpec)
    layout = ImageLayout.from_dict(dict(config["layout"]))
    point = resume_point(ctx)
    if point is not None and finished(point[1], "epochs_run"):
        report_again(ctx, *point)  # the best epoch's weights: nothing to train on
        return
    torch.set_num_threads(ctx.cpus)
    torch.manual_seed(spec.split.seed)
    net = build_model(len(layout.classes), layout.channels)
    resumed: dict[str, Any] = {}
    if point is not None:
        # Weights before DDP wraps the model (every worker loads the same checkpoint).
        net.load_state_dict(torch.load(point[0] / MODEL_FILE, map_location="cpu", weights_only=True))
        resumed = torch.load(point[0] / STATE_FILE, map_location="cpu", weights_only=True)
    if ctx.world_size > 1:
        import ray.train.torch

        device = ray.train.torch.get_device()
        # Gradients as views of DDP's buckets: no copy into the buckets each step (the 1x1
        # convolutions' gradients otherwise come out in another layout and are copied).
        model = ray.train.torch.prepare_model(net, parallel_strategy_kwargs={"gradient_as_bucket_view": True})
    else:
        device = _device(spec.scaling.use_gpu)
        model = net.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=model_spec.lr)
    if resumed:
        optimizer.load_state_dict(resumed["optimizer"])  # moved to the parameters' device
    meta = {"family": "resnet18", "data_kind": "images", "layout": layout.to_dict(), "device": str(device)}
    every = spec.train.report_every
    key = spec.metric if spec.metric in _EPOCH_METRICS else "valid_loss"
    minimize = spec.mode == "min" if key == spec.metric else True

    def better(new: float, old: float) -> bool:
        return new < old if minimize else new > old

    best: dict[str, float] | None = resumed.get("best")
    best_state: dict[str, torch.Tensor] | None = resumed.get("best_state")
    first = int(resumed.get("epoch", 0)) + 1
    if best is not None and best_state is None:  # the best epoch was the checkpoint's own
        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for epoch in range(first, model_spec.epochs + 1):
        model.train()
        batches = ctx.batches("train", model_spec.batch_size, shuffle=True)  # a held shard is read here, once
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        for batch in batches:
            x = _tensor(batch["image"], layout, device)
            y = torch.from_numpy(np.asarray(batch["label"], dtype=np.int64)).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
        train_s = time.perf_counter() - start
        if not math.isfinite(loss_sum):
            raise TrainError(f"training loss became {loss_sum} in epoch {epoch}; lower model.lr ({model_spec.lr})")
        v_loss, v_correct, v_count = _evaluate(model, ctx, layout, max(256, model_spec.batch_size), device)
        loss_sum, seen_f, v_loss, v_correct, v_count_f = _all_reduce(
            [loss_sum, float(seen), v_loss, float(v_correct), float(v_count)], ctx, device
        )
        metrics = {
            "epoch": float(epoch),
            "train_loss": loss_sum / max(seen_f, 1.0),
            "valid_loss": v_loss / max(v_count_f, 1.0),
            "valid_accuracy": v_correct / max(v_count_f, 1.0),
            "train_images_per_s": seen_f / max(train_s, 1e-9),
        }
        if best is None or better(metrics[key], best[key]):
            best = dict(metrics)
            best_state = {k: v.detach().clone() for k, v in getattr(model, "module", model).state_dict().items()}
        if ctx.rank != 0 or epoch % every != 0:
            ctx.report(metrics)
            continue
        state = {
            "epoch": epoch,
            "optimizer": _cpu(optimizer.state_dict()),
            "best": best,
            "best_state": None if best is not None and best["epoch"] == epoch else best_state,
        }
        report_checkpoint(ctx, metrics, meta, partial(_save, model, train_state=state))

    # The final report is the best epoch (by the spec's metric), as xgboost keeps its best round:
    # small validation sets make the last epoch's accuracy swing by a point or two.
    assert best is not None and best_state is not None
    getattr(model, "module", model).load_state_dict(best_state)
    final = {**best, "best_epoch": best["epoch"], "epochs_run": float(model_spec.epochs)}
    if first > 1:
        final["resumed_from_epoch"] = float(first - 1)
    report_checkpoint(ctx, final, meta, partial(_save, model))


# ---------------------------------------------------------------------------- predicting
class ResNetPredictor:
    """A loaded ResNet18 checkpoint; predicts class probabilities for uint8 image batches."""

    def __init__(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> None:
        weights = checkpoint / MODEL_FILE
        self.meta = checked_meta(checkpoint, MODEL_FILE, "resnet18")
        self.layout = ImageLayout.from_dict(self.meta["layout"])
        self.device = _device(True)
        # bfloat16 halves the weights' bytes: the 28x28 forward pass is bound by reading them.
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        torch.set_num_threads(max(1, cpus))
        self.model = build_model(len(self.layout.classes), self.layout.channels)
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.to(self.device, self.dtype).eval()
        self._classes = np.asarray(self.layout.classes, dtype=object)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, C, H, W] -> float [N, classes]."""
        with torch.inference_mode():
            logits = self.model(_tensor(images, self.layout, self.device, self.dtype))
            probs: np.ndarray = torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64)
        return probs

    def outputs(self, probs: np.ndarray) -> pd.DataFrame:
        best = probs.argmax(axis=1)
        return pd.DataFrame(
            {
                "predicted_label": self._classes[best],
                "probability": probs[np.arange(len(best)), best],
                "probabilities": list(probs),
            }
        )

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        if "image" not in batch.columns:
            raise DataError("input has no 'image' column")
        images = np.stack(batch["image"].to_numpy())
        expected = (self.layout.channels, *self.layout.size)
        if images.shape[1:] != expected:
            raise DataError(f"images are {images.shape[1:]}, the model expects {expected} (C, H, W)")
        return self.outputs(self.probabilities(images))

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        return self.records(self.probabilities(np.stack(items)))

    def saliency_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """Decoded uint8 images [C, H, W] -> ``{"saliency": H x W in 0..1, **prediction}`` each.

        The map is the gradient of the predicted class's logit with respect to each input pixel
        (its largest magnitude over the channels), scaled so the most telling pixel is 1: one
        forward and one backward pass per batch, where occlusion would take one forward pass per
        patch. ``torch.autograd.grad`` asks for the input's gradient only: nothing accumulates in
        the weights' ``.grad``, so concurrent calls share the model safely."""
        images = _tensor(np.stack(items), self.layout, self.device, self.dtype).requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(images).float()
            best = logits.argmax(dim=1)
            chosen = logits.gather(1, best[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, images)
        maps = grad.float().abs().amax(dim=1)  # [N, H, W]
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        saliency = (maps / peak).cpu().numpy().round(4).astype(np.float64)
        probs = torch.softmax(logits.detach(), dim=1).cpu().numpy().astype(np.float64)
        return [{"saliency": s.tolist(), **r} for s, r in zip(saliency, self.records(probs), strict=True)]

    def records(self, probs: np.ndarray) -> list[dict[str, Any]]:
        classes = self.layout.classes
        rows = []
        for row in probs:
            best = int(row.argmax())
            rows.append(
                {
                    "label": classes[best],
                    "probability": float(row[best]),
                    "probabilities": {c: float(p) for c, p in zip(classes, row, strict=True)},
                }
            )
        return rows


class ResNetFamily:
    name = "resnet18"
    data_kind = ResNetModelSpec.data_kind
    predict_batch_size = 256
    step_key = "epoch"

    def reports(self, spec: Spec) -> int:
        model = spec.model
        assert isinstance(model, ResNetModelSpec)
        return model.epochs + 1  # every epoch, then the best epoch once more

    def train_loop(self, config: Mapping[str, Any], ctx: LoopContext) -> None:
        train_resnet(config, ctx)

    def trainer(self, train_loop: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        from ray.train.torch import TorchConfig, TorchTrainer

        scaling = kwargs.get("scaling_config")
        if scaling is not None and scaling.use_gpu and scaling.num_workers > 1 and scaling.num_gpus_per_worker < 1:
            # Workers sharing a GPU: NCCL refuses two ranks on one device; gloo all-reduces
            # CUDA tensors too (through host memory).
            kwargs.setdefault("torch_config", TorchConfig(backend="gloo"))
        return TorchTrainer(train_loop, **kwargs)

    def load(self, checkpoint: Path, *, cpus: int = 1, precision: str = "float32") -> ResNetPredictor:
        return ResNetPredictor(checkpoint, cpus=cpus, precision=precision)

    def tunable(self, spec: Spec) -> set[str]:
        return set(_TUNABLE)

    def importance(self, checkpoint: Path) -> dict[str, float]:
        return {}

    def with_trial(self, spec: Spec, trial: Mapping[str, Any]) -> Spec:
        model = spec.model
        assert isinstance(model, ResNetModelSpec)
        return spec.model_copy(update={"model": model.model_copy(update=dict(trial))})
