"""Lesson 5, Ray Serve: a digit classifier online, composed and behind FastAPI.

First the lesson's API by hand: a preprocessor deployment and a classifier deployment composed
with handles behind a FastAPI ingress, with fractional CPUs and an autoscaling config. Then the
same with rayline, which adds dynamic request batching, model multiplexing by run id, request
validation and the /docs page. Both run on one Serve (the hand-built application at /by-hand,
rayline's service at /), which ``rayline.serve`` starts:

    python examples/lessons/lesson5_serve.py [--smoke]
"""

# No `from __future__ import annotations` here: FastAPI reads the route's parameter types at
# runtime, and Serve's ingress wrapper cannot resolve them from strings.
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from _common import EXAMPLES, arguments, digits_folder
from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve

api = FastAPI()


class Digit(BaseModel):
    image: list[list[float]]  # 28 x 28 values, 0-255


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Preprocessor:
    def __call__(self, image: list[list[float]]) -> np.ndarray:
        return np.asarray(image, dtype=np.uint8)[None, None]  # 1 x 1 x 28 x 28


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},  # fractional compute: two replicas fit on one CPU
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
)
class Classifier:
    def __init__(self, checkpoint: str) -> None:
        from rayline.families import get_family

        self.predictor = get_family("resnet18").load(Path(checkpoint))

    def __call__(self, images: np.ndarray) -> dict[str, Any]:
        return self.predictor.records(self.predictor.probabilities(images))[0]


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Ingress:
    def __init__(self, preprocessor: Any, classifier: Any) -> None:
        self.preprocessor, self.classifier = preprocessor, classifier

    @api.post("/predict")
    async def predict(self, digit: Digit) -> dict[str, Any]:
        return await self.classifier.remote(self.preprocessor.remote(digit.image))  # composition by handles


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{url}: HTTP {err.code}: {err.read().decode()[:300]}") from None


def main() -> None:
    args = arguments(__doc__ or "")
    import rayline
    from rayline.datasets import load_mnist
    from rayline.serving.runner import shutdown

    folder = digits_folder(per_class=20 if args.smoke else None)
    overrides = [f"data.source={folder}", "model.epochs=1" if args.smoke else "model.epochs=3"]
    # --smoke: rayline's service starts with one replica (each loads the model in a process of its own).
    one_replica = ["serve.autoscaling.initial_replicas=1"] if args.smoke else []
    spec = rayline.load_spec(str(EXAMPLES / "mnist.yaml"), [*overrides, *one_replica])
    first = rayline.train(spec).run_id
    second = rayline.train(rayline.load_spec(str(EXAMPLES / "mnist.yaml"), [*overrides, "model.lr=0.0005"])).run_id
    digits, labels = load_mnist()
    image = digits[-1].tolist()

    # One Ray and one Serve for both halves: rayline.serve starts them (Serve's HTTP ingress is
    # chosen when Ray starts) with its service at "/"; the hand-built application is deployed
    # beside it on the same Serve, at its own route prefix.
    service = rayline.serve(spec, model=first, port=0)  # 0: any free port
    checkpoint = str(rayline.open_registry().checkpoint_dir(first))
    serve.run(Ingress.bind(Preprocessor.bind(), Classifier.bind(checkpoint)), name="lesson5", route_prefix="/by-hand")
    print("by hand:", post(f"{service.url}/by-hand/predict", {"image": image})["label"], "(truth", labels[-1], ")")

    print("rayline:", post(f"{service.url}/predict", {"image": [image]})["predictions"][0]["label"])
    multiplexed = post(f"{service.url}/predict", {"image": [image]}, {"serve_multiplexed_model_id": second})
    print("rayline, model", multiplexed["model"][:8], "by header:", multiplexed["predictions"][0]["label"])
    shutdown()


if __name__ == "__main__":
    main()
