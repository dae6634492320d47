"""`rayline drift RUN --input CAPTURE [--against CAPTURE2]`: traffic a service captured, against the
training profile (skew) or against another window of traffic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from inprocess import own_home, rayline_here
from rayline import checkpoints
from rayline.data.capture_writer import Answered, CaptureWriter
from rayline.datasets import write_taxi
from rayline.families import get_family
from rayline.registry import open_registry
from rayline.spec import spec_from_dict
from rayline.stages.train import train

FEATURES = ["passenger_count", "trip_distance", "fare_amount", "trip_duration", "hour", "day_of_week"]


@dataclass(frozen=True)
class Trained:
    home: Path
    run_id: str
    root: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("capture-drift")
    with own_home(root):
        source = write_taxi(root / "taxi.parquet", 4000, seed=0)
        spec = spec_from_dict(
            {
                "name": "capture-taxi",
                "data": {"source": str(source), "label": "is_big_tip"},
                "model": {"family": "xgboost", "num_boost_round": 10, "early_stopping_rounds": None},
                "scaling": {"num_workers": "auto"},
            }
        )
        yield Trained(root / "home", train(spec).run_id, root)


def capture(trained: Trained, folder: Path, *, seed: int, stretch: float = 1.0, rows: int = 1500) -> str:
    """Records of a taxi table, answered by the trained model and captured as a service captures them."""
    frame = pd.read_parquet(write_taxi(trained.root / f"new-{seed}.parquet", rows, seed=seed))
    frame["trip_distance"] = frame["trip_distance"] * stretch
    records = frame[FEATURES].to_dict("records")
    registry = open_registry()
    record = registry.get(trained.run_id)
    predictor = get_family(record.family).load(registry.checkpoint_dir(record.run_id), cpus=1)
    assert checkpoints.read_meta(registry.checkpoint_dir(record.run_id))
    writer = CaptureWriter(str(folder), replica="test", max_file_mb=0.05)  # several files
    for start in range(0, rows, 50):
        items = records[start : start + 50]
        results = predictor.predict_items(items)
        writer.offer(Answered(f"{seed}-{start}", 0.0, 0.001, trained.run_id, "primary", "/predict", items, results))
    writer.close()
    assert writer.stats()["dropped"] == 0 and writer.stats()["files"] > (1 if rows >= 1000 else 0)
    return str(folder)


@pytest.fixture
def home(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Trained:
    monkeypatch.setenv("RAYLINE_HOME", str(trained.home))
    return trained


def test_a_capture_against_the_training_profile_and_another_window(
    home: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = capture(home, tmp_path / "monday", seed=1)
    longer = capture(home, tmp_path / "tuesday", seed=2, stretch=3.0)

    code, out, err = rayline_here(capsys, "drift", home.run_id, "--input", same, "--out", str(tmp_path / "d1"))
    assert code == 0, out + err
    assert "1,500 rows against run" in out
    report = json.loads((tmp_path / "d1" / "drift.json").read_text())
    assert report["rows"] == 1500 and report["prediction_psi"] is not None and not report["flagged"]

    code, out, err = rayline_here(capsys, "drift", home.run_id, "--input", longer, "--out", str(tmp_path / "d2"))
    assert code == 3, out + err
    assert "trip_distance" in err and report["psi"]["trip_distance"] < 0.1
    skew = json.loads((tmp_path / "d2" / "drift.json").read_text())
    assert skew["flagged"][0] == "trip_distance"

    # One window against another: tuesday's longer trips against monday's.
    args = ["drift", home.run_id, "--input", longer, "--against", same, "--out", str(tmp_path / "d3")]
    code, out, err = rayline_here(capsys, *args)
    assert code == 3 and "against the capture" in out, out + err
    window = json.loads((tmp_path / "d3" / "drift.json").read_text())
    assert window["against"] == same and window["flagged"][0] == "trip_distance"
    assert window["psi"]["hour"] < 0.1  # only the distance moved
    # A window against itself: no drift at all.
    code, out, err = rayline_here(
        capsys, "drift", home.run_id, "--input", same, "--against", same, "--out", str(tmp_path / "d4")
    )
    assert code == 0, out + err
    itself = json.loads((tmp_path / "d4" / "drift.json").read_text())
    assert max(itself["psi"].values()) < 1e-9 and itself["prediction_psi"] < 1e-9


def test_against_needs_two_captures(home: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = capture(home, tmp_path / "monday", seed=1, rows=50)
    table = str(home.root / "taxi.parquet")
    code, _, err = rayline_here(capsys, "drift", home.run_id, "--input", table, "--against", same)
    assert code == 1 and "not a capture folder" in err, err
    code, _, err = rayline_here(capsys, "drift", home.run_id, "--input", same, "--against", str(tmp_path / "none"))
    assert code == 1 and "no capture files" in err, err
    code, _, err = rayline_here(capsys, "drift", home.run_id, "--input", same)
    assert code == 1 and "50 rows" in err, err  # under the minimum, as for a table
