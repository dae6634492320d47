"""`rayline verify` for every registered family: the same validation rows in process, on the Ray
Data pool, over HTTP /predict, the Open Inference Protocol (REST and gRPC) and MLflow's pyfunc
give the same answers; a path made to differ fails naming it and the row."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

import imagesets
import rayline
import tablesets
from inprocess import rayline_here
from rayline.spec import Spec, spec_from_dict

pytestmark = pytest.mark.slow

EVERY_PATH = ["in process", "Ray Data pool", "HTTP /predict", "OIP REST", "OIP gRPC", "MLflow pyfunc"]


def write_spec(spec: Spec, folder: Path) -> Path:
    path = folder / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return path


def table_rows(out: str) -> dict[str, list[str]]:
    """The printed table: each path's cells (rows, max |diff|, seconds, note)."""
    found = {}
    for line in out.splitlines():
        for path in EVERY_PATH:
            if line.strip().startswith(path):
                found[path] = [c for c in line.strip()[len(path) :].split() if c != "│"]
    return found


def verified(capsys: pytest.CaptureFixture[str], spec: Spec, folder: Path, run_id: str, rows: int) -> dict:
    code, out, err = rayline_here(
        capsys, "verify", str(write_spec(spec, folder)), "--model", run_id, "--rows", str(rows)
    )
    assert code == 0, out + err
    printed = table_rows(out)
    assert list(printed) == EVERY_PATH, out
    for path, cells in printed.items():
        assert int(cells[0]) == rows, (path, out)
        assert float(cells[1]) <= 1e-6, (path, out)
    assert f"{rows} rows agree to 1e-06 on every path (model {run_id})" in out
    return printed


def test_xgboost_multiclass_every_path_agrees(
    ray_session: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tablesets.make_table("multiclass", tmp_path / "data", rows=400)
    spec = tablesets.spec_for("multiclass", source, name="verify-xgb")
    run_id = rayline.train(spec).run_id
    verified(capsys, spec, tmp_path, run_id, rows=60)


def test_lightgbm_with_a_text_column_every_path_agrees_and_a_differing_path_is_named(
    ray_session: object, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tablesets.make_table("binary", tmp_path / "data", rows=400)  # `color` is text
    raw = tablesets.spec_dict("binary", source, name="verify-lgb")
    raw["model"] = {"family": "lightgbm", "num_boost_round": 10, "early_stopping_rounds": None}
    spec = spec_from_dict(raw)
    run_id = rayline.train(spec).run_id
    verified(capsys, spec, tmp_path, run_id, rows=50)

    # MLflow's answer for row 7 made to differ by 1e-3: exit 1, the path, the row, the column, both values.
    from rayline.verify import paths

    real = paths.mlflow_pyfunc

    def off_at_row_7(*args: object) -> pd.DataFrame:
        frame = real(*args)
        assert frame is not None
        frame.loc[7, "probability"] += 1e-3
        return frame

    monkeypatch.setattr(paths, "mlflow_pyfunc", off_at_row_7)
    args = ["verify", str(tmp_path / "verify-lgb.yaml"), "--model", run_id, "--rows", "20", "--path", "mlflow"]
    code, out, err = rayline_here(capsys, *args)
    assert code == 1, out + err
    line = err.strip().splitlines()[-1]
    values = re.fullmatch(r"error: MLflow pyfunc differs at row 7, probability: (\S+) \(in process: (\S+)\)", line)
    assert values is not None, line
    assert abs(float(values[1]) - float(values[2]) - 1e-3) < 1e-9
    assert list(table_rows(out)) == ["in process", "MLflow pyfunc"], out

    # A path that is not one is refused with the names of those that are.
    code, _, err = rayline_here(capsys, "verify", args[1], "--model", run_id, "--path", "soap")
    assert code == 2 and "--path 'soap': expected one of local, pool, http, rest, grpc, mlflow" in err


def test_resnet18_images_every_path_agrees(
    ray_session: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=10)
    spec = imagesets.spec_for(source, name="verify-digits")
    run_id = rayline.train(spec).run_id
    printed = verified(capsys, spec, tmp_path, run_id, rows=12)
    assert set(printed) == set(EVERY_PATH)
