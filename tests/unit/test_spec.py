from __future__ import annotations

from pathlib import Path

import pytest

from rayline import SpecError, load_spec, spec_from_dict
from rayline.families.resnet.spec import ResNetModelSpec
from rayline.families.xgboost.spec import XGBoostModelSpec
from rayline.spec import TAXI_S3_URI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL = {"name": "t", "data": {"source": "builtin:taxi", "label": "is_big_tip"}, "model": {"family": "xgboost"}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["taxi.yaml", "taxi-lightgbm.yaml", "mnist.yaml"])
def test_examples_validate(name: str) -> None:
    spec = load_spec(EXAMPLES / name)
    assert spec.name == name.removesuffix(".yaml")


def test_example_families() -> None:
    assert isinstance(load_spec(EXAMPLES / "taxi.yaml").model, XGBoostModelSpec)
    mnist = load_spec(EXAMPLES / "mnist.yaml")
    assert isinstance(mnist.model, ResNetModelSpec)
    assert mnist.metric == "valid_accuracy" and mnist.mode == "max"


def test_overrides_are_typed() -> None:
    spec = load_spec(
        EXAMPLES / "mnist.yaml",
        ["model.epochs=2", "model.lr=0.01", "predict.concurrency=[1, 3]", "serve.autoscaling=null"],
    )
    assert isinstance(spec.model, ResNetModelSpec)
    assert spec.model.epochs == 2 and spec.model.lr == pytest.approx(0.01)
    assert spec.predict.concurrency == (1, 3)
    assert spec.serve.autoscaling is None


def test_override_creates_nested_section() -> None:
    spec = spec_from_dict(MINIMAL, ["serve.autoscaling.max_replicas=4"])
    assert spec.serve.autoscaling is not None and spec.serve.autoscaling.max_replicas == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.epochz=2", "model.epochz: unknown field"),
        ("model.epochs=two", "model.epochs: Input should be a valid integer"),
        ("model.epochs=0", "model.epochs: Input should be greater than 0"),
        ("model.family=catboost", "unknown model family 'catboost'"),
        ("split.valid_fraction=1.5", "split.valid_fraction: Input should be less than 1"),
        ("noequals", "expected KEY.PATH=VALUE"),
        ("name.x=1", "name is not a section"),
    ],
)
def test_bad_overrides_name_the_field(override: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(EXAMPLES / "mnist.yaml", [override])
    assert message in str(info.value)


def test_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata: {source: builtin:taxi}\nmodel: {family: xgboost, max_dept: 3}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert str(path) in text and "model.max_dept: unknown field" in text


def test_a_path_that_is_no_spec_file_says_what_it_is(tmp_path: Path) -> None:
    hint = " (pass the path to a .yaml spec)"
    assert str(pytest.raises(SpecError, load_spec, tmp_path / "absent.yaml").value).endswith(f"' not found{hint}")
    assert str(pytest.raises(SpecError, load_spec, tmp_path).value).endswith(f"{str(tmp_path)!r} is a folder{hint}")


def test_several_errors_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name: 'bad name!'\ndata: {source: builtin:taxi, shuffle: sometimes}\nmodel: {family: xgboost}\n"
    )
    text = str(pytest.raises(SpecError, load_spec, path).value)
    assert "name:" in text and "data.shuffle:" in text


def test_missing_required_sections(tmp_path: Path) -> None:
    text = str(pytest.raises(SpecError, load_spec, write(tmp_path, "name: x\n")).value)
    assert "data: Field required" in text and "model: Field required" in text


def test_missing_family(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata: {source: builtin:taxi}\nmodel: {epochs: 2}\n")
    assert "missing 'family'" in str(pytest.raises(SpecError, load_spec, path).value)


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata: [unclosed\n")
    text = str(pytest.raises(SpecError, load_spec, path).value)
    assert "invalid YAML" in text and "line" in text


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping" in str(pytest.raises(SpecError, load_spec, write(tmp_path, "- a\n- b\n")).value)


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in str(pytest.raises(SpecError, load_spec, tmp_path / "nope.yaml").value)


def test_family_data_mismatch() -> None:
    bad = {**MINIMAL, "model": {"family": "resnet18"}}
    assert "resnet18 learns from images; builtin:taxi is table" in str(
        pytest.raises(SpecError, spec_from_dict, bad).value
    )


def test_unknown_builtin() -> None:
    bad = {**MINIMAL, "data": {"source": "builtin:cifar"}}
    assert "unknown built-in dataset" in str(pytest.raises(SpecError, spec_from_dict, bad).value)


def test_real_s3_uri_is_kept_unchanged() -> None:
    spec = spec_from_dict({**MINIMAL, "data": {"source": TAXI_S3_URI, "label": "is_big_tip"}})
    assert spec.data.source == TAXI_S3_URI and spec.data.is_uri


def test_rows_only_for_builtin_taxi() -> None:
    bad = {**MINIMAL, "data": {"source": TAXI_S3_URI, "label": "is_big_tip", "rows": 10}}
    assert "only applies to source builtin:taxi" in str(pytest.raises(SpecError, spec_from_dict, bad).value)


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = spec_from_dict({**MINIMAL, "data": {"source": "data/t.parquet", "label": "y"}}, ["predict.output=o.parquet"])
    assert spec.data.source == str(tmp_path / "data" / "t.parquet")
    assert spec.predict.output == str(tmp_path / "o.parquet")


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ({"randint": [5, 2]}, "randint needs low < high"),
        ({"randint": [1, 3], "choice": [1]}, "exactly one of"),
        ({}, "exactly one of"),
        ({"loguniform": [0, 1]}, "greater than 0"),
        ({"normal": [0, 1]}, "unknown field"),
    ],
)
def test_search_space_checked(domain: dict[str, object], message: str) -> None:
    bad = {**MINIMAL, "tune": {"space": {"max_depth": domain}}}
    text = str(pytest.raises(SpecError, spec_from_dict, bad).value)
    assert "tune.space.max_depth" in text and message in text


def test_autoscaling_bounds_quote_both_values() -> None:
    bad = {**MINIMAL, "serve": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}
    assert "min_replicas=3 is above max_replicas=2" in str(pytest.raises(SpecError, spec_from_dict, bad).value)


def test_replicas_and_autoscaling_exclusive() -> None:
    bad = {**MINIMAL, "serve": {"num_replicas": 3, "autoscaling": {}}}
    assert "either num_replicas=3 or autoscaling" in str(pytest.raises(SpecError, spec_from_dict, bad).value)


def test_fingerprint_stable_and_sensitive() -> None:
    a, b = spec_from_dict(MINIMAL), spec_from_dict(MINIMAL)
    assert a.fingerprint() == b.fingerprint()
    assert spec_from_dict(MINIMAL, ["split.seed=7"]).fingerprint() != a.fingerprint()


def test_validated_spec_round_trips_through_its_dump() -> None:
    # training ships the dumped spec to workers, which validate it again
    spec = spec_from_dict({**MINIMAL, "serve": {"autoscaling": {"max_replicas": 3}}})
    again = type(spec).model_validate(spec.model_dump(mode="json"))
    assert again == spec and again.serve.num_replicas is None
