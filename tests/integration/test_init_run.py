"""A CSV the tests have never seen, with a text column and an id column, from data to a model
with no spec written by hand: `rayline run DATA --label COL` (the spec decided in memory and
stored under RAYLINE_HOME/specs), and `rayline init` -> `validate` -> `run SPEC`. Real Ray
(tuning), xgboost, MLflow; the CLI in this process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from inprocess import rayline_here
from rayline.registry import open_registry

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def loans(path: Path, rows: int = 1200, seed: int = 3) -> Path:
    """Loan applications: an id, a free region (text), income and debt; approved when the debt is
    small against the income, with the region moving the bar."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], rows)
    income = rng.gamma(4.0, 12_000, rows).round(0)
    debt = rng.uniform(0, 40_000, rows).round(0)
    bar = np.select([region == "north", region == "south"], [0.5, 0.3], 0.4)
    frame = pd.DataFrame(
        {
            "application_id": [f"APP-{seed}-{i:06d}" for i in rng.permutation(rows)],
            "region": region,
            "income": income,
            "debt": debt,
            "approved": np.where(debt / income < bar, "yes", "no"),
        }
    )
    frame.to_csv(path, index=False)
    return path


def layout_of(run_id: str) -> dict[str, object]:
    folder = open_registry().checkpoint_dir(run_id)
    meta: dict[str, object] = json.loads((folder / "meta.json").read_text())["layout"]
    return meta


def test_run_data_with_a_label_trains_tunes_evaluates_and_reports(
    ray_session: object, tmp_path: Path, rayline_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = loans(tmp_path / "loans.csv")
    code, out, err = rayline_here(
        capsys, "run", str(data), "--label", "approved", "--set", "model.num_boost_round=15", "--set",
        "tune.num_samples=2",
    )  # fmt: skip
    assert code == 0, err
    stored = rayline_home / "specs" / "loans.yaml"
    lines = out.splitlines()
    assert lines[:4] == [
        f"{data}: a table (CSV, 1,200 rows; decided from every row)",
        "label: approved (given with --label)",
        "task: binary (2 values: no, yes)",
        "features: 3 kept; text, so categorical: region",
    ]
    assert "left out: application_id (a different value on every row: an id)" in lines
    assert f"spec: {stored}" in lines
    model = lines[-1].split("--model ")[-1]
    assert lines[-1] == f"serve it: rayline serve {stored} --model {model}"
    # The whole lifecycle ran: the stages' table, the tune trials, the report of the model.
    assert all(f" {stage} " in out for stage in ("train", "tune", "predict", "evaluate", "report"))
    assert "2 trials" in out
    assert (rayline_home / "reports" / model / "report.html").is_file()
    # The id column never reached the model; the text column did, as categories.
    layout = layout_of(model)
    assert layout["features"] == ["region", "income", "debt"]
    assert sorted(layout["categorical"]) == ["region"]  # type: ignore[call-overload]
    # The stored spec is the one that ran (--set included) and the other commands take it.
    text = stored.read_text()
    assert "  num_boost_round: 15  # set on the command line (--set)" in text.splitlines()
    assert yaml.safe_load(text)["data"]["features"] == ["region", "income", "debt"]
    code, out, err = rayline_here(capsys, "evaluate", str(stored), "--model", "best")
    assert code == 0, err
    assert f"stored on run {model}" in out


def test_init_writes_a_spec_that_validates_and_runs(
    ray_session: object,
    tmp_path: Path,
    rayline_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    loans(tmp_path / "applications.csv", rows=600, seed=5)
    code, out, err = rayline_here(capsys, "init", "applications.csv", "--label", "approved")
    assert code == 0, err
    assert out.splitlines()[-1] == "wrote applications.yaml; next: rayline run applications.yaml"
    code, _, err = rayline_here(capsys, "validate", "applications.yaml")
    assert code == 0, err
    code, out, err = rayline_here(capsys, "run", "applications.yaml", "--no-tune", "--set", "model.num_boost_round=10")
    assert code == 0, err
    model = out.splitlines()[-1].split("--model ")[-1]
    assert out.splitlines()[-1] == f"serve it: rayline serve applications.yaml --model {model}"
    assert " tune " not in out
    assert layout_of(model)["features"] == ["region", "income", "debt"]
    assert (rayline_home / "reports" / model / "report.html").is_file()


def test_a_name_last_used_for_other_data_is_noted(
    ray_session: object, tmp_path: Path, rayline_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first, second = loans(tmp_path / "a" / "loans.csv", rows=300), loans(tmp_path / "b" / "loans.csv", 300, seed=4)
    args = ["--label", "approved", "--family", "tiny", "--no-tune"]
    code, _, err = rayline_here(capsys, "run", str(first), *args)
    assert code == 0, err
    assert "note:" not in err
    code, _, err = rayline_here(capsys, "run", str(second), *args)
    assert code == 0, err
    assert f"note: spec name 'loans' was last used for {first}; runs of both compete for --model best" in err
    code, _, err = rayline_here(capsys, "run", str(second), *args, "--name", "loans-b")
    assert code == 0, err
    assert "note:" not in err
    assert yaml.safe_load((rayline_home / "specs" / "loans-b.yaml").read_text())["data"]["source"] == str(second)
