"""Drift end to end: training stores a profile with the model; `rayline drift` flags a shifted
taxi table (another seed, longer trips) and passes an unshifted one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inprocess import own_home, rayline_here
from rayline.data.drift_profile import EPSILON, PROFILE_FILE
from rayline.datasets import write_taxi
from rayline.errors import RegistryError
from rayline.registry import open_registry
from rayline.spec import spec_from_dict
from rayline.stages.drift import drift
from rayline.stages.train import train

SCRIPT = Path(sys.executable).with_name("rayline")
ROWS = 20_000
FEATURES = ["passenger_count", "trip_distance", "fare_amount", "trip_duration", "hour", "day_of_week"]


@dataclass(frozen=True)
class Trained:
    home: Path
    run_id: str
    data: Path  # the training table


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """One small taxi model for the module, trained in this process."""
    root = tmp_path_factory.mktemp("drift")
    with own_home(root):
        source = write_taxi(root / "taxi.parquet", ROWS, seed=0)
        spec = spec_from_dict(
            {
                "name": "drift-taxi",
                "data": {"source": str(source), "label": "is_big_tip", "scale": ["trip_distance", "trip_duration"]},
                "model": {
                    "family": "xgboost",
                    "num_boost_round": 20,
                    "early_stopping_rounds": None,
                    "params": {"max_depth": 4, "eta": 0.3, "tree_method": "hist"},
                },
                "scaling": {"num_workers": "auto"},
            }
        )
        result = train(spec)
        assert result.path == "local"
        yield Trained(root / "home", result.run_id, source)


@pytest.fixture
def home(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Trained:
    monkeypatch.setenv("RAYLINE_HOME", str(trained.home))
    return trained


def rayline(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, in a process of its own."""
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False
    )


def by_hand_psi(values: np.ndarray, edges: list[float], expected: list[float]) -> float:
    """PSI of present values against the training shares, bucketed by pandas, not by rayline."""
    cut = pd.cut(values, bins=[-math.inf, *edges, math.inf], right=False)
    actual = pd.Series(cut).value_counts(sort=False, normalize=True).to_numpy()
    e, a = np.maximum(np.asarray(expected[:-1]), EPSILON), np.maximum(actual, EPSILON)  # no missing values here
    return float(np.sum((a - e) * np.log(a / e)))


def test_training_stores_a_profile_with_the_model(home: Trained) -> None:
    folder = open_registry().checkpoint_dir(home.run_id)
    profile = json.loads((folder / PROFILE_FILE).read_text())
    assert list(profile["features"]) == FEATURES
    train_rows = pd.read_parquet(home.data)
    assert 0.6 * ROWS < profile["rows"] < ROWS  # the training split, not the validation rows
    share = float(train_rows["is_big_tip"].mean())
    assert profile["class_balance"]["True"] == pytest.approx(share, abs=0.02)
    assert profile["prediction_source"] == "model"
    distance = profile["features"]["trip_distance"]
    assert len(distance["edges"]) == 9 and distance["expected"][-1] == 0.0  # no missing distances
    assert all(0.08 < s < 0.12 for s in distance["expected"][:-1])  # deciles: a tenth each


def test_drift_flags_longer_trips(home: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shifted = tmp_path / "longer.parquet"
    made = rayline_here(
        capsys, "data", "taxi", "--rows", str(ROWS), "--seed", "7", "--trip-scale", "1.8", "--out", str(shifted)
    )
    assert made[0] == 0, made[2]
    proc = rayline("drift", home.run_id, "--input", str(shifted), "--out", str(tmp_path / "out"))
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drift: trip_distance"), proc.stderr
    assert "hour" not in lines[0] and "day_of_week" not in lines[0]
    report = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert report["drifted"] is True and "trip_distance" in report["flagged"]
    assert report["psi"]["hour"] < 0.1 and report["rows"] == ROWS
    assert (tmp_path / "out" / "drift.png").stat().st_size > 10_000
    # The PSI rayline reports is the one pandas' bucketing and the formula give.
    profile = json.loads((open_registry().checkpoint_dir(home.run_id) / PROFILE_FILE).read_text())
    bins = profile["features"]["trip_distance"]
    values = pd.read_parquet(shifted)["trip_distance"].to_numpy()
    assert report["psi"]["trip_distance"] == pytest.approx(by_hand_psi(values, bins["edges"], bins["expected"]))


def test_drift_passes_an_unshifted_table(home: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = write_taxi(tmp_path / "same.parquet", ROWS, seed=7)
    code, out, err = rayline_here(capsys, "drift", home.run_id[:8], "--input", str(same))
    assert code == 0, err
    assert "DRIFT" not in out and "trip_distance" in out
    report = json.loads((home.home / "drift" / home.run_id / "drift.json").read_text())
    assert report["drifted"] is False and report["flagged"] == []
    assert max(report["psi"].values()) < 0.05 and report["prediction_psi"] < 0.05


def test_drift_names_a_missing_column_in_one_line(
    home: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = pd.read_parquet(write_taxi(tmp_path / "t.parquet", 500, seed=8)).drop(columns=["fare_amount"])
    table.to_parquet(tmp_path / "no_fare.parquet")
    code, _, err = rayline_here(capsys, "drift", home.run_id, "--input", str(tmp_path / "no_fare.parquet"))
    assert code not in (0, 3)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'fare_amount' is missing" in lines[0]


def test_too_few_rows_to_judge_are_refused(home: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As the live monitor: PSI on a handful of rows would flag sampling noise as drift."""
    few = write_taxi(tmp_path / "few.parquet", 99, seed=9)
    code, _, err = rayline_here(capsys, "drift", home.run_id, "--input", str(few))
    assert code == 1, err
    assert err.strip() == (
        f"error: {few}: 99 rows; PSI on fewer than 100 mostly measures sampling noise (compare a bigger sample)"
    )


def test_a_model_without_a_profile_says_so(home: Trained, tmp_path: Path) -> None:
    path = open_registry().checkpoint_dir(home.run_id) / PROFILE_FILE
    path.rename(tmp_path / PROFILE_FILE)
    try:
        with pytest.raises(RegistryError, match="has no drift profile"):
            drift(home.run_id, input=str(home.data))
    finally:
        (tmp_path / PROFILE_FILE).rename(path)


def test_the_ray_path_profiles_a_random_bounded_sample(ray_session: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.data

    from rayline.data import Prepared
    from rayline.stages import training_profile

    frame = pd.DataFrame({"i": np.arange(4_000), "x": np.random.default_rng(0).normal(size=4_000)})
    data = Prepared(
        config={}, fingerprint={}, rows=4_000, datasets={"train": ray.data.from_pandas(frame).materialize()}
    )
    monkeypatch.setattr(training_profile, "SAMPLE_ROWS", 500)
    sample = training_profile.training_sample(data)
    assert len(sample) == 500 and list(sample.columns) == ["i", "x"]
    assert sample["i"].max() > 1_000  # drawn from the whole split, not its first rows
