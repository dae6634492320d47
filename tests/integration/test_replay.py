"""`rayline replay SPEC --capture DIR --model CANDIDATE [--labels FILE --key request_id]` and
`rayline promote RUN --alias A --evidence REPLAY_RUN`: a candidate scored on captured traffic,
and a promotion judged by the replay's bootstrap interval."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from inprocess import own_home, rayline_here
from rayline.data.capture_writer import Answered, CaptureWriter
from rayline.datasets import write_taxi
from rayline.families import get_family
from rayline.registry import open_registry
from rayline.spec import spec_from_dict
from rayline.stages.train import train

FEATURES = ["passenger_count", "trip_distance", "fare_amount", "trip_duration", "hour", "day_of_week"]
ROWS = 400


@dataclass(frozen=True)
class Setup:
    home: Path
    spec: Path
    good: str  # answered the captured traffic
    weak: str  # a candidate that sees one feature only
    near: str  # the same model trained on other rows
    capture: Path
    labels: Path


def _spec(source: Path, **model: object) -> dict[str, object]:
    return {
        "name": "replay-taxi",
        "data": {"source": str(source), "label": "is_big_tip"},
        "model": {"family": "xgboost", "num_boost_round": 20, "early_stopping_rounds": None, **model},
        "scaling": {"num_workers": "auto"},
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("replay")
    with own_home(root):
        source = write_taxi(root / "taxi.parquet", 4000, seed=0)
        raw = _spec(source)
        (root / "spec.yaml").write_text(yaml.safe_dump(raw))
        good = train(spec_from_dict(raw)).run_id
        weak_raw = {**raw, "data": {**raw["data"], "features": ["day_of_week"]}}  # type: ignore[dict-item]
        weak = train(spec_from_dict(weak_raw)).run_id
        near = train(spec_from_dict(_spec(write_taxi(root / "other.parquet", 4000, seed=5)))).run_id
        # Traffic the good model answered, one record per request, captured as a service does.
        frame = pd.read_parquet(write_taxi(root / "traffic.parquet", ROWS, seed=1))
        registry = open_registry()
        predictor = get_family("xgboost").load(registry.checkpoint_dir(good), cpus=1)
        writer = CaptureWriter(str(root / "capture"), replica="test", max_file_mb=0.02)
        records = frame[FEATURES].to_dict("records")
        for i, record in enumerate(records):
            answer = predictor.predict_items([record])
            writer.offer(Answered(f"r{i}", 0.0, 0.001, good, "primary", "/predict", [record], answer))
            if i % 4 == 0:  # a shadow's answers are captured too; a replay of the primary leaves them out
                writer.offer(Answered(f"r{i}", 0.0, 0.001, weak, "shadow", "/predict", [record], answer))
        writer.close()
        assert writer.stats()["dropped"] == 0 and writer.stats()["files"] > 1
        labels = root / "labels.parquet"
        pd.DataFrame({"request_id": [f"r{i}" for i in range(ROWS)], "is_big_tip": frame["is_big_tip"]}).to_parquet(
            labels
        )
        yield Setup(root / "home", root / "spec.yaml", good, weak, near, root / "capture", labels)


@pytest.fixture
def home(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setenv("RAYLINE_HOME", str(setup.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return setup


def _replay(capsys: pytest.CaptureFixture[str], s: Setup, model: str, out: Path, *extra: str) -> tuple[int, str, str]:
    args = ["replay", str(s.spec), "--capture", str(s.capture), "--model", model, "--out", str(out), *extra]
    code, printed, errors = rayline_here(capsys, *args)
    return code, printed, errors


def _run_of(out: str) -> str:
    return out.split("replay run ")[-1].split(";")[0]


def test_a_run_replayed_on_its_own_traffic_agrees(
    home: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _replay(capsys, home, home.good, tmp_path / "self")
    assert code == 0, out + err
    assert f"replayed {ROWS} primary rows" in out, out  # the shadow's rows are left out
    report = json.loads((tmp_path / "self" / "replay.json").read_text())
    assert report["rows"] == ROWS and report["recorded"] == [home.good] and report["candidate"] == home.good
    assert report["agreement"]["agreement"] == 1.0
    assert report["agreement"]["max_abs_diff"] < 1e-6
    assert report["shift"]["labels"]["psi"] < 1e-9 and report["shift"]["probability"]["psi"] < 1e-9
    assert report["differences"] == {}  # no labels: no metrics
    figures = json.loads((tmp_path / "self" / "report.json").read_text())["figures"]
    assert [f["file"] for f in figures] == ["agreement.png", "shift_labels.png", "shift_probability.png"]
    assert figures[0]["points"] == ROWS and figures[1]["bars"] == 2 * 4  # two classes, other, missing
    assert (tmp_path / "self" / "report.html").read_text().count("<img") == 3
    record = open_registry().get(_run_of(out))
    assert record.kind == "replay" and record.tags["rayline.model_run"] == home.good
    assert record.tags["rayline.replay.capture"] == str(home.capture)
    assert record.metrics["agreement"] == 1.0 and record.metrics["rows"] == ROWS


def test_a_weaker_candidate_with_labels_and_the_evidence_guard(
    home: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = ("--labels", str(home.labels), "--key", "request_id")
    code, out, err = _replay(capsys, home, home.weak, tmp_path / "weak", *labelled)
    assert code == 0, out + err
    report = json.loads((tmp_path / "weak" / "replay.json").read_text())
    assert report["agreement"]["agreement"] < 0.95 and report["agreement"]["max_abs_diff"] > 0.1
    assert report["labelled_rows"] == ROWS
    diffs = report["differences"]
    assert set(diffs) == {"accuracy", "logloss", "auc"}
    auc = diffs["auc"]
    assert auc["difference"] == pytest.approx(auc["candidate"] - auc["recorded"])
    assert auc["low"] <= auc["difference"] <= auc["high"] and auc["high"] < 0  # worse with confidence
    assert diffs["logloss"]["low"] > 0 and auc["resamples"] == 1000
    figures = json.loads((tmp_path / "weak" / "report.json").read_text())["figures"]
    assert "difference_auc.png" in [f["file"] for f in figures]
    weak_replay = _run_of(out)
    # The same replay again: the same interval (a fixed seed).
    code, out, err = _replay(capsys, home, home.weak, tmp_path / "again", *labelled)
    assert code == 0, out + err
    again = json.loads((tmp_path / "again" / "replay.json").read_text())["differences"]
    assert again["auc"]["low"] == auc["low"] and again["logloss"]["high"] == diffs["logloss"]["high"]

    # promote --evidence: the spec's metric (loss: log loss, lower is better) lies above zero.
    code, out, err = rayline_here(capsys, "promote", home.weak, "--alias", "replayed", "--evidence", weak_replay)
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "logloss" in lines[0] and "lies above zero" in lines[0], err
    assert weak_replay[:12] in lines[0] and f"[{diffs['logloss']['low']:+.4f}" in lines[0]
    assert open_registry().alias_run("replay-taxi", "replayed") is None
    # Evidence of another run's replay is no evidence for this one.
    code, _, err = rayline_here(capsys, "promote", home.good, "--alias", "replayed", "--evidence", weak_replay)
    assert code == 1 and "a replay of run" in err and len(err.strip().splitlines()) == 1, err
    # A candidate whose interval holds zero is let through, whatever its point difference.
    code, out, err = _replay(capsys, home, home.near, tmp_path / "near", *labelled)
    assert code == 0, out + err
    near = json.loads((tmp_path / "near" / "replay.json").read_text())
    assert near["agreement"]["agreement"] > 0.6 and near["agreement"]["max_abs_diff"] > 0
    loss = near["differences"]["logloss"]
    assert loss["difference"] != 0 and loss["low"] < 0 < loss["high"], loss
    code, out, err = rayline_here(capsys, "promote", home.near, "--alias", "replayed", "--evidence", _run_of(out))
    assert code == 0, out + err
    assert "replayed traffic" in out and open_registry().alias_run("replay-taxi", "replayed") == home.near


def test_errors_are_one_line(home: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, model = str(home.spec), home.good
    cases = [
        (["--capture", str(tmp_path / "none"), "--model", model], 1, "no such capture folder"),
        (["--capture", str(home.capture), "--model", model, "--labels", str(home.labels)], 2, "--key go together"),
        (["--capture", str(home.capture), "--model", model, "--labels", str(home.labels), "--key", "trip"], 1,
         "trip: no such column"),
        (["--capture", str(home.capture), "--model", model, "--role", "canary"], 1, "no rows answered as canary"),
    ]  # fmt: skip
    for args, expected, words in cases:
        code, out, err = rayline_here(capsys, "replay", spec, *args, "--out", str(tmp_path / "o"))
        assert code == expected and words in err and len(err.strip().splitlines()) == 1, (args, out, err)
    # A replay without labels is no evidence: it holds no interval.
    code, out, err = _replay(capsys, home, model, tmp_path / "plain")
    assert code == 0, out + err
    code, _, err = rayline_here(capsys, "promote", model, "--alias", "x", "--evidence", _run_of(out))
    assert code == 1 and "no interval" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_the_actor_pool_scores_the_same(
    home: Setup, ray_session: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _replay(capsys, home, home.good, tmp_path / "pool", "--set", "predict.engine=ray")
    assert code == 0, out + err
    assert "Ray actor pool" in out
    report = json.loads((tmp_path / "pool" / "replay.json").read_text())
    assert report["agreement"]["agreement"] == 1.0 and report["agreement"]["max_abs_diff"] < 1e-6


@pytest.mark.slow  # a resnet trained in process
def test_an_image_capture_replayed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import imagesets

    with own_home(tmp_path):
        source = imagesets.digits(tmp_path / "digits", per_class=6, classes=[1, 4])
        spec = imagesets.spec_for(source, name="replay-digits")
        (tmp_path / "digits.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        run_id = train(spec).run_id
        predictor = get_family("resnet18").load(open_registry().checkpoint_dir(run_id), cpus=1)
        images = [imagesets.digit_array(d, n).reshape(1, 28, 28) for d in (1, 4) for n in range(6)]
        writer = CaptureWriter(str(tmp_path / "capture"), replica="test")
        for i in range(0, len(images), 3):
            batch = images[i : i + 3]
            writer.offer(
                Answered(f"q{i}", 0.0, 0.01, run_id, "canary", "/predict", batch, predictor.predict_items(batch))
            )
        writer.close()
        args = ["--capture", str(tmp_path / "capture"), "--model", run_id, "--role", "canary"]
        code, out, err = rayline_here(
            capsys, "replay", str(tmp_path / "digits.yaml"), *args, "--out", str(tmp_path / "r")
        )
        assert code == 0, out + err
        report = json.loads((tmp_path / "r" / "replay.json").read_text())
        assert report["rows"] == 12 and report["agreement"]["agreement"] == 1.0
        assert report["agreement"]["max_abs_diff"] < 1e-5 and report["shift"]["labels"]["psi"] < 1e-9
