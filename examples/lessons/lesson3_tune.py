"""Lesson 3, Ray Tune: search learning rate and batch size for ResNet18 on MNIST with ASHA.

The lesson's API on current Ray: a function trainable reports each epoch with
``ray.tune.report``; ``Tuner`` samples ``param_space`` (``loguniform``, ``choice``) and ASHA
stops poor trials early. The trials share the digits through the object store
(``tune.with_parameters``) and each gets one CPU, so trials never oversubscribe the cores.
Then the same search with rayline, from the spec, with every trial registered.

    python examples/lessons/lesson3_tune.py [--smoke]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _common import EXAMPLES, arguments


def train_mnist(config: dict[str, Any], images: np.ndarray, labels: np.ndarray) -> None:
    import ray.tune
    import torch

    from rayline.families.resnet.family import build_model

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    cut = int(0.8 * len(order))
    x = torch.from_numpy((images[:, None].astype(np.float32) / 255.0 - 0.5) / 0.5)
    y = torch.from_numpy(labels)
    model = build_model(num_classes=10, channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    for epoch in range(config["epochs"]):
        model.train()
        for start in range(0, cut, config["batch_size"]):
            idx = order[start : start + config["batch_size"]]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            valid = order[cut:]
            accuracy = (model(x[valid]).argmax(1) == y[valid]).float().mean().item()
        ray.tune.report({"epoch": epoch + 1, "valid_accuracy": accuracy})


def main() -> None:
    args = arguments(__doc__ or "")
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    import rayline
    from rayline import runtime
    from rayline.datasets import load_mnist

    runtime.init()
    images, labels = load_mnist()
    if args.smoke:
        images, labels = images[::20], labels[::20]
    epochs = 1 if args.smoke else 3
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_mnist, images=images, labels=labels), {"cpu": 1}),
        param_space={"lr": tune.loguniform(3e-4, 3e-3), "batch_size": tune.choice([32, 64]), "epochs": epochs},
        tune_config=tune.TuneConfig(
            metric="valid_accuracy",
            mode="max",
            num_samples=2 if args.smoke else 4,
            scheduler=ASHAScheduler(max_t=epochs, grace_period=1),
        ),
        run_config=tune.RunConfig(storage_path=runtime.storage_path(), name="lesson3", verbose=0),
    )
    best = tuner.fit().get_best_result()
    print("Ray Tune best:", best.config, round(best.metrics["valid_accuracy"], 4))

    # The same search from a spec: trials run the shared training loop and land in the registry.
    overrides = ["tune.num_samples=2", "model.epochs=1"] if args.smoke else ["model.epochs=3"]
    if args.smoke:
        from _common import digits_folder

        overrides.append(f"data.source={digits_folder(per_class=20)}")
    result = rayline.tune(rayline.load_spec(str(EXAMPLES / "mnist.yaml"), overrides))
    print("rayline tune best:", result.best_config, round(result.best_metrics["valid_accuracy"], 4))
    runtime.shutdown()


if __name__ == "__main__":
    main()
