"""ResNet18's saliency maps (``saliency_items``): a real model loaded from a checkpoint, its maps
checked against finite differences of the same model's logit."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from rayline.data.image_codec import ImageLayout, normalize
from rayline.families.resnet.family import ResNetFamily, ResNetPredictor, build_model, save_checkpoint

SIZE = (28, 28)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> ResNetPredictor:
    """Seeded random weights: the map explains whatever the network computes."""
    torch.manual_seed(0)
    layout = ImageLayout(classes=["1", "7"], mode="L", size=SIZE)
    meta = {"family": "resnet18", "data_kind": "images", "layout": layout.to_dict()}
    folder = save_checkpoint(build_model(2, 1).eval(), meta, tmp_path_factory.mktemp("ckpt") / "checkpoint")
    return ResNetFamily().load(folder, cpus=1)


def digits() -> list[np.ndarray]:
    """Two drawings as the page sends them once decoded: uint8 [1, H, W], a bright stroke on black."""
    one = np.zeros((1, *SIZE), dtype=np.uint8)
    one[0, 4:24, 13:16] = 255
    seven = np.zeros((1, *SIZE), dtype=np.uint8)
    seven[0, 5:8, 6:22] = 255
    for k in range(16):
        seven[0, 8 + k, 20 - k // 2 : 23 - k // 2] = 255
    return [one, seven]


def test_maps_have_the_input_size_and_the_prediction(predictor: ResNetPredictor) -> None:
    images = digits()
    maps = predictor.saliency_items(images)
    json.dumps(maps, allow_nan=False)
    predictions = predictor.predict_items(images)
    assert len(maps) == 2
    for got, prediction in zip(maps, predictions, strict=True):
        saliency = np.array(got["saliency"])
        assert saliency.shape == SIZE
        assert saliency.min() >= 0 and saliency.max() == pytest.approx(1.0)
        assert got["label"] == prediction["label"]
        assert got["probability"] == pytest.approx(prediction["probability"], abs=1e-5)
    assert not np.allclose(maps[0]["saliency"], maps[1]["saliency"])  # each map is of its own image


def test_map_is_the_gradient_of_the_predicted_logit(predictor: ResNetPredictor) -> None:
    """The map's values are in the ratios of finite differences of the predicted class's logit,
    pixel by pixel (a float64 copy of the model, so the differences are exact enough).

    The stroke is drawn on a noisy background: on a flat one, max pooling meets ties, where
    the logit has no derivative and a one-sided difference says something else."""
    noise = np.random.default_rng(0).integers(0, 40, size=(1, *SIZE))
    image = np.clip(digits()[0].astype(np.int64) + noise, 0, 255).astype(np.uint8)
    got = predictor.saliency_items([image])[0]
    saliency = np.array(got["saliency"])
    label = predictor.layout.classes.index(got["label"])
    model = copy.deepcopy(predictor.model).double().cpu()  # the predictor may sit on a GPU
    x = torch.from_numpy(normalize(image[None], predictor.layout)).double()
    eps = 1e-5

    def sensitivity(at: tuple[int, ...]) -> float:
        moved = x.clone()
        moved[0, 0, at[0], at[1]] += eps
        with torch.inference_mode():
            return abs(float(model(moved)[0, label] - model(x)[0, label])) / eps

    order = np.argsort(saliency, axis=None)[::-1]  # most telling first
    pixels = [np.unravel_index(order[k], SIZE) for k in (0, 4, len(order) // 2, len(order) * 9 // 10)]
    differences = np.array([sensitivity(tuple(int(i) for i in at)) for at in pixels])
    assert differences[0] > 0
    # On a GPU the map comes from TF32 convolutions (10-bit mantissas): looser there.
    tolerance = 2e-3 if predictor.device.type == "cpu" else 3e-2
    np.testing.assert_allclose(differences / differences[0], [saliency[at] for at in pixels], atol=tolerance)
