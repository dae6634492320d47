"""How many Tune trials run at once, and with how many CPUs each: cores, GPUs and the spec."""

from __future__ import annotations

from typing import Any

import pytest

from rayline.runtime import Resources
from rayline.spec import Spec, spec_from_dict
from rayline.stages.tune import trial_concurrency


def spec(scaling: dict[str, Any], samples: int = 4) -> Spec:
    return spec_from_dict(
        {
            "name": "t",
            "data": {"source": "builtin:mnist"},
            "model": {"family": "resnet18"},
            "scaling": scaling,
            "tune": {"num_samples": samples, "space": {"lr": {"loguniform": [0.001, 0.01]}}},
        }
    )


@pytest.mark.parametrize(
    ("scaling", "cpus", "gpus", "expected"),
    [
        ({}, 16, 0, (4, 4.0)),  # CPU trials: the cores split among the samples
        ({}, 2, 0, (2, 1.0)),
        ({"use_gpu": True}, 16, 1, (1, 16.0)),  # one GPU each: one trial at a time, all cores
        ({"use_gpu": True, "gpus_per_worker": 0.5}, 16, 1, (2, 8.0)),
        ({"use_gpu": True, "gpus_per_worker": 0.25}, 16, 2, (4, 4.0)),  # capped by the samples
    ],
)
def test_in_process_trials(scaling: dict[str, Any], cpus: float, gpus: float, expected: tuple[int, float]) -> None:
    assert trial_concurrency(spec(scaling), Resources(cpus=cpus, gpus=gpus), local=True) == expected


def test_gpus_not_yet_in_a_cluster_do_not_cap_trials() -> None:
    """A cluster may show no GPU until its autoscaler adds a node: the CPUs decide then."""
    assert trial_concurrency(spec({"use_gpu": True}), Resources(cpus=8, gpus=0), local=True) == (4, 2.0)


def test_trials_launching_train_runs_count_their_workers() -> None:
    two_workers = {"num_workers": 2, "use_gpu": True, "gpus_per_worker": 0.5}
    assert trial_concurrency(spec(two_workers), Resources(cpus=16, gpus=2), local=False) == (2, 0.0)
