"""`rayline init` / `rayline.init_spec`: the decisions a spec is made of, from small tables and image
sets the tests write, and the commented YAML they become. No Ray, no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import imagesets
import rayline
from inprocess import rayline_here
from rayline import DataError, SpecError, spec_from_dict
from rayline.autospec import safe_name


def churn(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """A customer table: an id (text), a row number (integer id), text and number features,
    a constant column and a yes/no label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(rows)],
            "row": np.arange(rows),
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "tenure": rng.integers(1, 60, rows),
            "spend": rng.normal(50, 10, rows).round(2),
            "country": "UK",
        }
    )
    frame["churned"] = np.where((frame.plan == "basic") & (frame.tenure < 20), "yes", "no")
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------- the label
@pytest.mark.parametrize("column", ["target", "Label", "CLASS", "y", "Outcome"])
def test_a_column_named_like_a_label_is_the_label(tmp_path: Path, column: str) -> None:
    data = write_csv(churn().rename(columns={"churned": column}), tmp_path / "c.csv")
    draft = rayline.init_spec(data)
    assert draft.label == column
    assert f"label: {column} (named like a label)" in draft.summary


def test_an_exact_name_wins_over_a_name_with_the_word_in_it(tmp_path: Path) -> None:
    frame = churn().rename(columns={"churned": "target"})
    frame.insert(0, "target_group", frame["plan"])  # has the word, is not the label
    draft = rayline.init_spec(write_csv(frame, tmp_path / "c.csv"))
    assert draft.label == "target"
    assert "target_group" in draft.features


def test_one_column_with_the_word_in_its_name_is_the_label(tmp_path: Path) -> None:
    data = write_csv(churn().rename(columns={"churned": "churnLabel"}), tmp_path / "c.csv")
    draft = rayline.init_spec(data)
    assert draft.label == "churnLabel"
    assert "label: churnLabel (its name says label)" in draft.summary


def test_several_exact_names_pick_in_order_and_name_the_others(tmp_path: Path) -> None:
    frame = churn().rename(columns={"churned": "y"})
    frame["label"] = frame["y"]
    draft = rayline.init_spec(write_csv(frame, tmp_path / "c.csv"))
    assert draft.label == "label"
    assert "y" in draft.summary[1] and "--label picks another" in draft.summary[1]


def test_no_label_column_is_one_line_listing_candidates(tmp_path: Path) -> None:
    data = write_csv(churn(), tmp_path / "c.csv")
    with pytest.raises(SpecError) as info:
        rayline.init_spec(data)
    message = str(info.value)
    assert message.startswith(f"{data}: label: no column is named target, label, class, y or outcome; pass --label")
    assert "churned (2 values)" in message and "plan (3 values)" in message
    assert "customer_id" not in message  # a column of ids is no candidate


def test_candidates_include_the_last_column(tmp_path: Path) -> None:
    frame = churn()
    frame["amount"] = np.linspace(0, 1, len(frame))  # many values, last
    with pytest.raises(SpecError, match=r"amount \(last column\)"):
        rayline.init_spec(write_csv(frame, tmp_path / "c.csv"))


def test_a_label_that_is_not_a_column_names_the_columns(tmp_path: Path) -> None:
    data = write_csv(churn(), tmp_path / "c.csv")
    with pytest.raises(SpecError, match=r"--label 'nope': no such column; columns are customer_id, row, plan"):
        rayline.init_spec(data, label="nope")


# -------------------------------------------------------------------------------- the task
@pytest.mark.parametrize(
    ("values", "task"),
    [
        (lambda n, rng: rng.choice(["yes", "no"], n), "binary"),
        (lambda n, rng: rng.integers(0, 2, n), "binary"),
        (lambda n, rng: rng.choice(["a", "b", "c", "d"], n), "multiclass"),
        (lambda n, rng: rng.integers(0, 5, n), "multiclass"),
        (lambda n, rng: rng.normal(0, 1, n), "regression"),
        (lambda n, rng: rng.integers(0, 1000, n), "regression"),  # more distinct integers than classes
    ],
)
def test_the_task_follows_the_labels_type_and_cardinality(tmp_path: Path, values: object, task: str) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=400), "target": values(400, rng)})  # type: ignore[operator]
    draft = rayline.init_spec(write_csv(frame, tmp_path / "t.csv"))
    assert draft.task == task
    assert draft.summary[2].startswith(f"task: {task} (")
    loss = "RMSE" if task == "regression" else "log loss"
    assert f"metric: valid_loss  # {loss}" in draft.text


# ---------------------------------------------------------------------------- the features
def test_ids_and_constant_columns_are_left_out_and_text_is_categorical(tmp_path: Path) -> None:
    draft = rayline.init_spec(write_csv(churn(), tmp_path / "churn.csv"), label="churned")
    assert draft.features == ["plan", "tenure", "spend"]
    assert draft.spec.data.features == ["plan", "tenure", "spend"]
    assert draft.categorical == ["plan"]
    assert draft.spec.data.categorical == "auto"  # the default takes text columns as categories
    assert draft.left_out == {
        "customer_id": "a different value on every row: an id",
        "row": "a different value on every row: an id",
        "country": "constant: UK on every row",
    }
    assert "features: 3 kept; text, so categorical: plan" in draft.summary
    assert any(
        line.startswith("left out: customer_id (a different value on every row: an id)") for line in draft.summary
    )


def test_a_unique_float_column_is_a_feature_and_few_rows_prove_no_id(tmp_path: Path) -> None:
    frame = churn(rows=30)  # too few rows to call a column unique on each of them an id
    frame["spend"] += np.arange(30) / 1000  # unique floats: a measurement, not an id
    draft = rayline.init_spec(write_csv(frame, tmp_path / "c.csv"), label="churned")
    assert {"customer_id", "row", "spend"} <= set(draft.features)
    assert list(draft.left_out) == ["country"]


def test_columns_neither_numbers_nor_text_and_empty_ones_are_left_out(tmp_path: Path) -> None:
    frame = churn()
    frame["signed_up"] = pd.date_range("2024-01-01", periods=len(frame), freq="h")
    frame["notes"] = None
    data = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data)
    draft = rayline.init_spec(data, label="churned")
    assert draft.left_out["signed_up"] == "timestamp[ns]: neither numbers nor text"
    assert draft.left_out["notes"] == "no values"
    assert "signed_up" not in draft.features


def test_no_feature_left_is_one_line(tmp_path: Path) -> None:
    frame = churn()[["customer_id", "country", "churned"]]
    with pytest.raises(DataError, match=r"no feature columns left besides label 'churned': customer_id \(a different"):
        rayline.init_spec(write_csv(frame, tmp_path / "c.csv"), label="churned")


def test_a_big_table_is_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rayline.autospec import tables

    monkeypatch.setattr(tables, "SAMPLE_ROWS", 100)
    data = write_csv(churn(rows=500), tmp_path / "c.csv")
    assert "500 rows; decided from 100 rows picked at random" in rayline.init_spec(data, label="churned").summary[0]
    monkeypatch.setattr(tables, "WHOLE_READ_BYTES", 10)  # too big to read whole: the first rows
    assert "100+ rows; decided from the first 100 rows" in rayline.init_spec(data, label="churned").summary[0]


# ------------------------------------------------------------------ family, spec and YAML
def test_the_yaml_is_the_spec_and_says_why(tmp_path: Path) -> None:
    draft = rayline.init_spec(write_csv(churn(), tmp_path / "My churn (2024).csv"), label="churned")
    assert draft.spec.name == "My-churn-2024"
    assert spec_from_dict(yaml.safe_load(draft.text)) == draft.spec
    lines = draft.text.splitlines()
    assert lines[0].startswith("# A spec decided from a sample of the data (rayline init)")
    assert "  label: churned  # given with --label" in lines
    assert "  family: xgboost  # the default for tables; --family lightgbm for LightGBM" in lines
    assert "    max_depth: {randint: [3, 10]}" in lines
    comment = next(i for i, line in enumerate(lines) if "left out: customer_id" in line)
    assert lines[comment].lstrip().startswith("#")
    assert draft.spec.model.family == "xgboost" and draft.spec.tune.num_samples == 4
    assert set(draft.spec.tune.space) == {"max_depth", "eta"}
    assert (draft.spec.metric, draft.spec.mode) == ("valid_loss", "min")
    assert draft.spec.data.source == str((tmp_path / "My churn (2024).csv").resolve())


def test_lightgbm_gets_its_own_parameter_names(tmp_path: Path) -> None:
    draft = rayline.init_spec(write_csv(churn(), tmp_path / "c.csv"), label="churned", family="lightgbm")
    assert draft.spec.model.family == "lightgbm"
    assert set(draft.spec.tune.space) == {"num_leaves", "learning_rate"}
    assert "family: lightgbm (given with --family)" in draft.summary[5]


def test_a_family_without_a_known_space_trains_once(tmp_path: Path) -> None:
    draft = rayline.init_spec(write_csv(churn(), tmp_path / "c.csv"), label="churned", family="tiny")
    assert draft.spec.tune.space == {}
    assert draft.summary[-1] == "tune: none (no search space known for family tiny; add tune.space to search)"


@pytest.mark.parametrize(
    ("family", "message"),
    [
        ("resnet18", "--family resnet18: learns from images, but {data} holds a table"),
        ("forest", "--family 'forest': unknown family; expected one of xgboost"),
    ],
)
def test_a_wrong_family_is_one_line(tmp_path: Path, family: str, message: str) -> None:
    data = write_csv(churn(), tmp_path / "c.csv")
    with pytest.raises(SpecError) as info:
        rayline.init_spec(data, label="churned", family=family)
    assert str(info.value).startswith(message.format(data=data))


def test_overrides_apply_on_top_and_are_commented(tmp_path: Path) -> None:
    data = write_csv(churn(), tmp_path / "c.csv")
    draft = rayline.init_spec(data, label="churned", overrides=["model.num_boost_round=7", "tune.num_samples=2"])
    assert draft.spec.model.num_boost_round == 7 and draft.spec.tune.num_samples == 2  # type: ignore[attr-defined]
    assert "  num_boost_round: 7  # set on the command line (--set)" in draft.text.splitlines()
    assert spec_from_dict(yaml.safe_load(draft.text)) == draft.spec
    with pytest.raises(SpecError, match=r"model\.num_boost_round: Input should be greater than 0"):
        rayline.init_spec(data, label="churned", overrides=["model.num_boost_round=0"])


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("data/churn.csv", "churn"),
        ("churn.csv.gz", "churn"),
        ("s3://bucket/trips.parquet", "trips"),
        ("/data/images/", "images"),
        ("_.csv", "model"),
        ("x" * 80 + ".pq", "x" * 64),
    ],
)
def test_the_name_comes_from_the_file_or_folder(source: str, name: str) -> None:
    assert safe_name(source) == name


def test_what_is_no_table_and_no_images_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="holds no table"):
        rayline.init_spec(tmp_path / "empty")
    with pytest.raises(DataError, match="expected a parquet or CSV file, a folder of them, an image folder"):
        rayline.init_spec(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="does not exist"):
        rayline.init_spec(tmp_path / "nothing.csv")
    with pytest.raises(TypeError, match=r"rayline\.init_spec: label must be a str or None, got int"):
        rayline.init_spec(tmp_path / "nothing.csv", label=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ images
def test_an_image_folder_is_images_with_its_classes(tmp_path: Path) -> None:
    folder = imagesets.digits(tmp_path / "digits", per_class=4, classes=[3, 5, 7])
    draft = rayline.init_spec(folder)
    assert (draft.kind, draft.task, draft.label) == ("images", "multiclass", None)
    spec = draft.spec
    assert (spec.model.family, spec.data.format, spec.data.image.mode, spec.data.image.size) == (
        "resnet18",
        "images",
        "L",
        (28, 28),
    )
    assert set(spec.tune.space) == {"lr"}
    assert draft.summary[0] == f"{folder}: images, 12 files in 3 class folders (3, 5, 7)"
    assert "images: grayscale 28x28, kept at that size" in draft.summary
    assert spec_from_dict(yaml.safe_load(draft.text)) == spec
    with pytest.raises(SpecError, match="an image folder's classes are its subfolders; drop --label"):
        rayline.init_spec(folder, label="digit")


def test_colour_images_of_several_sizes_are_resized(tmp_path: Path) -> None:
    draft = rayline.init_spec(imagesets.colours(tmp_path / "colours", per_class=3))
    assert (draft.spec.data.image.mode, draft.spec.data.image.size) == ("RGB", (64, 64))
    assert draft.task == "multiclass"


def test_an_image_parquet_is_images_with_its_label_column(tmp_path: Path) -> None:
    folder = imagesets.digits(tmp_path / "digits", per_class=4, classes=[0, 1])
    data = imagesets.to_parquet(folder, tmp_path / "digits.parquet")
    draft = rayline.init_spec(data)
    assert (draft.kind, draft.task, draft.label) == ("images", "binary", "label")
    assert (draft.spec.data.format, draft.spec.data.features) == ("parquet", ["image"])
    with pytest.raises(SpecError, match=r"--family xgboost: learns from table, but .* holds images"):
        rayline.init_spec(data, family="xgboost")


# ------------------------------------------------------------------------------------- CLI
def test_init_writes_a_spec_validate_accepts_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(churn(), tmp_path / "churn.csv")
    code, out, err = rayline_here(capsys, "init", "churn.csv", "--label", "churned")
    assert code == 0, err
    assert out.splitlines()[0] == "churn.csv: a table (CSV, 300 rows; decided from every row)"
    assert out.splitlines()[-1] == "wrote churn.yaml; next: rayline run churn.yaml"
    assert (tmp_path / "churn.yaml").is_file()
    code, _, err = rayline_here(capsys, "validate", "churn.yaml")
    assert code == 0 and "churn.yaml: valid" in err
    before = (tmp_path / "churn.yaml").read_text()
    code, _, err = rayline_here(capsys, "init", "churn.csv", "--label", "churned", "--family", "lightgbm")
    assert code == 2
    assert err.strip() == "error: churn.yaml already exists (pass --force to replace it, or --out another file)"
    assert (tmp_path / "churn.yaml").read_text() == before
    code, _, err = rayline_here(capsys, "init", "churn.csv", "--label", "churned", "--family", "lightgbm", "--force")
    assert code == 0, err
    assert "family: lightgbm" in (tmp_path / "churn.yaml").read_text()
    code, out, _ = rayline_here(
        capsys, "init", "churn.csv", "--label", "churned", "--out", "specs/c.yaml", "--name", "c"
    )
    assert code == 0 and "wrote specs/c.yaml" in out
    assert yaml.safe_load((tmp_path / "specs" / "c.yaml").read_text())["name"] == "c"


def test_init_errors_are_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(churn(), tmp_path / "churn.csv")
    code, _, err = rayline_here(capsys, "init", str(data), "--out", str(tmp_path / "s.yaml"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {data}: label: no column is named")
    assert not (tmp_path / "s.yaml").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--label", "y"], "error: --label: {spec} is a spec file; --label is for data"),
        (["--family", "lightgbm"], "error: --family: {spec} is a spec file; --family is for data"),
    ],
)
def test_run_with_a_spec_refuses_data_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    spec = Path(__file__).resolve().parents[2] / "examples" / "taxi.yaml"
    code, _, err = rayline_here(capsys, "run", str(spec), *flags)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(message.format(spec=spec))


def test_run_of_data_without_a_label_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rayline_home: Path
) -> None:
    data = write_csv(churn(), tmp_path / "churn.csv")
    code, _, err = rayline_here(capsys, "run", str(data))
    assert code == 2 and "label: no column is named target" in err
    assert not (rayline_home / "specs").exists()
