"""The Python API's boundary: a wrong kind of argument is one TypeError naming the parameter and
what it takes, raised before any work (no Ray, no registry, no stage imported)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rayline
from rayline import Registry, Spec, load_spec, open_registry, spec_from_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TAXI = str(EXAMPLES / "taxi.yaml")
RAW = {"name": "t", "data": {"source": "builtin:taxi", "label": "is_big_tip"}, "model": {"family": "xgboost"}}
EXPECTS_SPEC = "expects a Spec (from rayline.load_spec(path) or rayline.spec_from_dict(d)), got "
SPEC_STAGES = ["train", "tune", "predict", "evaluate", "serve", "run"]


@pytest.fixture(scope="module")
def spec() -> Spec:
    return spec_from_dict(RAW)


def raises(call: Callable[[], Any]) -> str:
    """The one-line message of the TypeError ``call`` raises."""
    with pytest.raises(TypeError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", SPEC_STAGES)
def test_a_path_string_instead_of_a_spec_says_to_load_it(name: str) -> None:
    message = raises(lambda: getattr(rayline, name)(TAXI))
    assert message == f"rayline.{name} {EXPECTS_SPEC}str; load it first: rayline.load_spec({TAXI!r})"


@pytest.mark.parametrize("name", SPEC_STAGES)
def test_a_path_object_instead_of_a_spec_says_to_load_it(name: str) -> None:
    message = raises(lambda: getattr(rayline, name)(Path(TAXI)))
    assert message == f"rayline.{name} {EXPECTS_SPEC}PosixPath; load it first: rayline.load_spec({TAXI!r})"


@pytest.mark.parametrize("name", SPEC_STAGES)
def test_a_dict_instead_of_a_spec_says_to_validate_it(name: str) -> None:
    message = raises(lambda: getattr(rayline, name)(RAW))
    assert message == f"rayline.{name} {EXPECTS_SPEC}dict; validate it first: rayline.spec_from_dict(d)"


@pytest.mark.parametrize("name", SPEC_STAGES)
def test_none_instead_of_a_spec(name: str) -> None:
    assert raises(lambda: getattr(rayline, name)(None)) == f"rayline.{name} {EXPECTS_SPEC}NoneType"


def test_drift_takes_a_run_id_not_a_spec(spec: Spec) -> None:
    message = raises(lambda: rayline.drift(spec, input="new.parquet"))  # type: ignore[arg-type]
    assert message == (
        "rayline.drift: run_id must be a run id, a unique prefix of one, or an alias (a str), got Spec; "
        "e.g. rayline.train(spec).run_id"
    )
    assert "run_id must be" in raises(lambda: rayline.drift(None, input="new.parquet"))  # type: ignore[arg-type]
    assert "got an empty str" in raises(lambda: rayline.drift("  ", input="new.parquet"))


def test_drift_input_must_be_a_path(spec: Spec) -> None:
    message = raises(lambda: rayline.drift("abc123", input=spec))
    assert message == "rayline.drift: input must be a path or URI (str or os.PathLike), got Spec"


def test_drift_out_is_a_folder_path() -> None:
    message = raises(lambda: rayline.drift("abc123", input="new.parquet", out=1.5))
    assert message == "rayline.drift: out must be a folder path (str or os.PathLike), got float"


def test_promote_takes_a_run_id_and_an_alias(spec: Spec) -> None:
    message = raises(lambda: rayline.promote(spec, "champion"))  # type: ignore[arg-type]
    assert message == (
        "rayline.promote: run_id must be a run id, a unique prefix of one, or an alias (a str), got Spec; "
        "e.g. rayline.train(spec).run_id"
    )
    message = raises(lambda: rayline.promote("abc123", spec))  # type: ignore[arg-type]
    assert message == "rayline.promote: alias must be an alias name such as 'champion' (a str), got Spec"
    message = raises(lambda: rayline.promote("abc123", "champion", spec=TAXI))
    assert message.startswith(f"rayline.promote(spec=...) {EXPECTS_SPEC}str; load it first")


@pytest.mark.parametrize("name", ["predict", "evaluate", "serve"])
@pytest.mark.parametrize("model", [123, None, "", Path("best")])
def test_model_must_be_a_run_id_alias_or_selector(spec: Spec, name: str, model: object) -> None:
    message = raises(lambda: getattr(rayline, name)(spec, model=model))
    got = "an empty str" if model == "" else type(model).__name__
    assert message == f"rayline.{name}: model must be a run id, an alias, 'best' or 'latest' (a str), got {got}"


@pytest.mark.parametrize("name", ["input", "output"])
def test_predict_paths_must_be_paths(spec: Spec, name: str) -> None:
    message = raises(lambda: rayline.predict(spec, **{name: 5}))
    assert message == f"rayline.predict: {name} must be a path or URI (str or os.PathLike), got int"


def test_spec_from_dict_takes_a_mapping() -> None:
    message = raises(lambda: spec_from_dict("name: x"))  # type: ignore[arg-type]
    assert message == (
        "rayline.spec_from_dict expects a mapping (a dict, as parsed from YAML), got str; "
        "for a file use rayline.load_spec(path)"
    )
    assert raises(lambda: spec_from_dict(None)).endswith("got NoneType")  # type: ignore[arg-type]


def test_load_spec_takes_a_path() -> None:
    message = raises(lambda: load_spec(RAW))  # type: ignore[arg-type]
    assert message == (
        "rayline.load_spec expects a path (str or os.PathLike), got dict; for a dict use rayline.spec_from_dict(d)"
    )
    assert raises(lambda: load_spec(None)) == (  # type: ignore[arg-type]
        "rayline.load_spec expects a path (str or os.PathLike), got NoneType"
    )


@pytest.mark.parametrize("overrides", ["data.rows=10", b"data.rows=10", 10])
def test_overrides_must_be_a_list_not_one_string(overrides: object) -> None:
    expected = f"overrides must be a list of 'KEY.PATH=VALUE' strings, got {type(overrides).__name__}"
    assert raises(lambda: load_spec(TAXI, overrides)) == expected  # type: ignore[arg-type]
    assert raises(lambda: spec_from_dict(RAW, overrides)) == expected  # type: ignore[arg-type]


def test_overrides_must_hold_strings() -> None:
    message = raises(lambda: load_spec(TAXI, ["data.rows=10", 10]))  # type: ignore[list-item]
    assert message == "overrides must be a list of 'KEY.PATH=VALUE' strings, got a int in it"


def test_overrides_may_be_any_iterable_of_strings() -> None:
    assert load_spec(TAXI, ("data.rows=10",)).data.rows == 10
    assert spec_from_dict(RAW, (o for o in ["data.rows=12"])).data.rows == 12  # read once, not twice


@pytest.mark.parametrize("kind", [str, Path])
def test_open_registry_takes_a_str_or_a_path(tmp_path: Path, kind: type) -> None:
    registry = open_registry(kind(tmp_path / "home"))
    assert isinstance(registry, Registry)
    assert registry.home == tmp_path / "home"
    assert registry.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"


def test_the_checks_happen_before_any_work() -> None:
    """Each wrong call fails without importing Ray or a stage: nothing is started, nothing written."""
    script = textwrap.dedent(
        f"""
        import sys
        import rayline
        spec = rayline.spec_from_dict({RAW!r})
        calls = [
            lambda: rayline.train({TAXI!r}), lambda: rayline.tune({{}}), lambda: rayline.run(None),
            lambda: rayline.predict(spec, model=1), lambda: rayline.evaluate("x"), lambda: rayline.serve("x"),
            lambda: rayline.drift(spec, input="x"), lambda: rayline.promote(spec, "champion"),
        ]
        for call in calls:
            try:
                call()
            except TypeError:
                pass
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.", "rayline.stages", "mlflow")))
        print(loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_a_spec_still_passes(spec: Spec) -> None:
    """The checks only refuse: a Spec and str keyword arguments go through unchanged."""
    from rayline import _checked, _spec_arg

    assert _spec_arg("train", spec) is spec
    assert _checked("predict", {"model": "best", "input": Path("/x/in.parquet"), "output": None}) == {
        "model": "best",
        "input": "/x/in.parquet",
        "output": None,
    }
    assert _checked("drift", {"input": "in.parquet", "out": "/x/drift"})["out"] == Path("/x/drift")
