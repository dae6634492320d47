"""The serving contract, without Ray: a batch returns one output per input (checked, as LitServe
checks), results go back to their requests in order, and the topology follows the resources."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from rayline.serving._models import predict_checked, split_back
from rayline.serving.config import topology
from rayline.spec import ServeSpec
from rayline.stages.heartbeat import Pulse
from rayline.stages.predict import BatchPredictor


class Echo:
    def __init__(self, drop: int = 0) -> None:
        self.drop = drop

    def predict_items(self, items: list[Any]) -> list[dict[str, Any]]:
        return [{"value": item} for item in items[self.drop :]]

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"value": batch["x"].to_numpy()[self.drop :]})


def test_one_output_per_input_is_checked() -> None:
    assert predict_checked(Echo(), [1, 2, 3]) == [{"value": 1}, {"value": 2}, {"value": 3}]
    with pytest.raises(RuntimeError, match="returned 2 results for 3 inputs"):
        predict_checked(Echo(drop=1), [1, 2, 3])


def test_batch_predictor_checks_its_rows_too() -> None:
    predictor = BatchPredictor.__new__(BatchPredictor)
    predictor.predictor, predictor.drop, predictor.pulse = Echo(drop=1), [], Pulse(None)
    with pytest.raises(RuntimeError, match="returned 2 rows for a batch of 3"):
        predictor(pd.DataFrame({"x": [1, 2, 3]}))
    predictor.predictor = Echo()
    assert predictor(pd.DataFrame({"x": [1, 2, 3]}))["value"].tolist() == [1, 2, 3]


def test_results_go_back_to_their_requests() -> None:
    results = [{"i": i} for i in range(6)]
    assert split_back(results, [1, 3, 0, 2]) == [[{"i": 0}], [{"i": 1}, {"i": 2}, {"i": 3}], [], [{"i": 4}, {"i": 5}]]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "fused"),
        ({"num_gpus": 0.5}, "composed"),
        ({"topology": "composed"}, "composed"),
        ({"num_gpus": 1.0, "topology": "fused"}, "fused"),
    ],
)
def test_topology_follows_where_the_model_runs(settings: dict[str, Any], expected: str) -> None:
    assert topology(ServeSpec(**settings)) == expected
