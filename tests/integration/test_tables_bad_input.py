"""Bad tables and bad references fail early with a DataError naming the file and column, and leave nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tablesets
from rayline.errors import DataError, RegistryError, SpecError
from rayline.registry import open_registry
from rayline.spec import spec_from_dict
from rayline.stages.evaluate import evaluate
from rayline.stages.predict import predict
from rayline.stages.train import train


def _corrupt(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corrupt.parquet"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _frame_case(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        return tablesets.write(change(tablesets.binary_frame()), folder, "bad")

    return make


def _empty_text_label(folder: Path) -> Path:
    """A CSV whose text label has an empty cell: a missing label, not a class named ''."""
    df = tablesets.binary_frame()
    df["clicked"] = np.where(df["clicked"] == 1, "yes", "no").astype(object)
    df.loc[3, "clicked"] = None
    return tablesets.write(df, folder, "bad", "csv")


def _semicolons(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tablesets.binary_frame().to_csv(folder / "semi.csv", sep=";", index=False)
    return folder / "semi.csv"


# case -> (writes the bad table, spec changes, words the message must contain besides the path)
CASES: dict[str, tuple[Callable[[Path], Path], dict[str, Any], list[str]]] = {
    "missing-label": (_frame_case(lambda df: df.drop(columns=["clicked"])), {}, ["'clicked'", "not found"]),
    "undeclared-string": (
        _frame_case(lambda df: df),
        {"data": {"categorical": []}},
        ["'color'", "string", "data.categorical"],
    ),
    "all-nan-feature": (_frame_case(lambda df: df.assign(x2=np.nan)), {}, ["'x2'", "no values"]),
    "corrupt-parquet": (_corrupt, {}, ["cannot read"]),
    "empty-parquet": (_frame_case(lambda df: df.iloc[:0]), {}, ["no rows"]),
    "one-class": (_frame_case(lambda df: df.assign(clicked=1)), {}, ["'clicked'", "single value"]),
    "empty-text-label": (_empty_text_label, {}, ["label column 'clicked' has 1 missing value (drop those rows"]),
    "semicolon-csv": (_semicolons, {}, ["'clicked' not found", "one column with ';' in it", "comma-separated"]),
}


def assert_nothing_left(home: Path) -> None:
    """No registry run, no checkpoint, no scratch folder."""
    assert open_registry().list_runs() == []
    if home.exists():
        assert not [p for p in home.iterdir() if p.name.startswith("rayline-")]
        assert not list(home.rglob("model.ubj"))


def _train_fails(case: str, workers: Any, tmp_path: Path, home: Path) -> None:
    make, extra, words = CASES[case]
    source = make(tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name=f"bad-{case}", scaling={"num_workers": workers}, **extra)
    with pytest.raises(DataError) as info:
        train(spec)
    message = str(info.value)
    assert str(source) in message
    for word in words:
        assert word in message
    assert "\n" not in message
    assert_nothing_left(home)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_table_in_process(case: str, tmp_path: Path, rayline_home: Path) -> None:
    _train_fails(case, "auto", tmp_path, rayline_home)


@pytest.mark.parametrize(
    "case", ["corrupt-parquet", "empty-parquet", "one-class", "all-nan-feature", "empty-text-label"]
)
def test_bad_table_on_ray_data(case: str, ray_session: object, tmp_path: Path, rayline_home: Path) -> None:
    """The Ray Data reader applies the same checks before any Train worker starts."""
    _train_fails(case, 2, tmp_path, rayline_home)


def test_missing_source_and_bad_spec(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        train(tablesets.spec_for("binary", missing))
    with pytest.raises(SpecError, match=r"data.*rows"):
        tablesets.spec_for("binary", tablesets.make_table("binary", tmp_path), data={"rows": 10})
    with pytest.raises(SpecError, match=r"model\.num_boost_round"):
        spec_from_dict(tablesets.spec_dict("binary", tmp_path / "x.parquet", model={"num_boost_round": 0}))
    with pytest.raises(DataError, match=r"'nope' named in the spec"):
        train(tablesets.spec_for("binary", tablesets.make_table("binary", tmp_path), data={"features": ["x1", "nope"]}))
    assert open_registry().list_runs() == []


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Any, str]:
    """A binary model on the in-process path (no Ray needed)."""
    source = tablesets.make_table("binary", tmp_path / "data")
    spec = tablesets.spec_for("binary", source, name="bad-predict")
    return spec, train(spec).run_id


def _kinds() -> list[str]:
    return [r.kind for r in open_registry().list_runs("bad-predict")]


def test_unknown_model_reference(trained: tuple[Any, str], tmp_path: Path) -> None:
    spec, _ = trained
    target = tmp_path / "out" / "p.parquet"
    with pytest.raises(RegistryError, match="no run with id '0123456789abcdef0123456789abcdef'"):
        predict(spec, model="0123456789abcdef0123456789abcdef", output=str(target))
    with pytest.raises(RegistryError, match="'nosuchrun'"):
        evaluate(spec, model="nosuchrun")
    with pytest.raises(RegistryError, match="no trained model for spec 'other-name'"):
        predict(spec.model_copy(update={"name": "other-name"}), output=str(target))
    assert not target.parent.exists()
    assert _kinds() == ["train"]


def with_engine(spec: Any, engine: str) -> Any:
    return spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": engine})})


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_predict_input_missing_feature(
    ray_session: object, trained: tuple[Any, str], tmp_path: Path, engine: str
) -> None:
    spec, run_id = trained
    spec = with_engine(spec, engine)
    bad = tablesets.write(tablesets.binary_frame(rows=50, seed=3).drop(columns=["x2"]), tmp_path / "in", "nox2", "csv")
    target = tmp_path / "out" / "p.parquet"
    with pytest.raises(DataError, match=r"column 'x2' is missing"):
        predict(spec, model=run_id, input=str(bad), output=str(target))
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []

    missing = tmp_path / "in" / "absent.csv"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        predict(spec, model=run_id, input=str(missing), output=str(target))

    nolabel = tablesets.write(
        tablesets.binary_frame(rows=50, seed=3).drop(columns=["clicked"]), tmp_path / "in", "nolab"
    )
    with pytest.raises(DataError, match=r"no label column 'clicked'"):
        evaluate(spec, model=run_id, input=str(nolabel))
    assert _kinds() == ["train"]  # no predict job was registered
    assert "eval_accuracy" not in open_registry().get(run_id).metrics


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_failed_write_leaves_no_output(
    ray_session: object, trained: tuple[Any, str], tmp_path: Path, engine: str
) -> None:
    """Inference that fails midway (text in a numeric feature) keeps the old output and leaves no temp copy."""
    spec, run_id = trained
    spec = with_engine(spec, engine)
    target = tmp_path / "out" / "p.parquet"
    target.mkdir(parents=True)
    (target / "part-00000.parquet").write_bytes(b"previous output")
    bad = tablesets.binary_frame(rows=50, seed=3).astype({"x1": str})
    bad.loc[0, "x1"] = "not a number"
    path = tablesets.write(bad, tmp_path / "in", "textx1")
    with pytest.raises(DataError) as info:
        predict(spec, model=run_id, input=str(path), output=str(target))
    # the same message on both engines: the column and the value, not Ray's retry advice
    assert str(info.value) == f"{path}: column 'x1' is string; the model was trained on numbers (double)"
    assert (target / "part-00000.parquet").read_bytes() == b"previous output"
    assert sorted(p.name for p in target.parent.iterdir()) == ["p.parquet"]
    assert sorted(p.name for p in target.iterdir()) == ["part-00000.parquet"]
    assert _kinds() == ["train"]


def test_an_output_folder_holding_other_files_is_refused(trained: tuple[Any, str], tmp_path: Path) -> None:
    """`--out .` or a folder of the user's: refused before any work, nothing deleted."""
    spec, run_id = trained
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("the user's")
    with pytest.raises(DataError, match=r"holds notes\.txt, which rayline did not write"):
        predict(spec, model=run_id, output=str(target))
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert _kinds() == ["train"]
