"""`rayline evaluate` on labelled rows that hold only one of the model's classes: the printed
confusion matrix still has a row and a column per class, and AUC (undefined with one class) is
stored as null in strict JSON and printed as n/a with the reason. Real xgboost, MLflow and CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tablesets
from inprocess import own_home, rayline_here
from rayline.registry import open_registry
from rayline.spec import Spec
from rayline.stages.evaluate import Evaluation, Reduced, evaluate
from rayline.stages.train import train

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Trained:
    home: Path
    spec_file: Path
    spec: Spec
    run_id: str
    ones: Path  # 50 labelled rows, every one of class 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """One small binary model (classes 0 and 1) for the module, trained in this process."""
    root = tmp_path_factory.mktemp("one-class")
    with own_home(root):
        source = tablesets.make_table("binary", root / "data")
        raw = tablesets.spec_dict("binary", source, name="one-class")
        spec_file = root / "spec.json"  # JSON is YAML: the CLI reads the same spec
        spec_file.write_text(json.dumps(raw))
        spec = tablesets.spec_for("binary", source, name="one-class")
        result = train(spec)
        assert result.path == "local"
        frame = tablesets.binary_frame(400, seed=7)
        ones = tablesets.write(frame[frame["clicked"] == 1].head(50), root / "data", "ones")
        yield Trained(root / "home", spec_file, spec, result.run_id, ones)


@pytest.fixture
def home(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Trained:
    monkeypatch.setenv("RAYLINE_HOME", str(trained.home))
    return trained


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity, which Python accepts but JSON does not."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def matrix(out: str) -> dict[str, list[str]]:
    """The printed confusion matrix: the header's cells under "header", then each row by its label."""
    cells = [re.split(r"\s*[│┃|]\s*", line.strip()) for line in out.splitlines() if re.search(r"[│┃|]", line)]
    return {("header" if row[0].startswith("true") else row[0]): row[1:] for row in cells}


def test_the_cli_prints_every_class_and_auc_as_not_available(home: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = rayline_here(
        capsys, "evaluate", str(home.spec_file), "--model", home.run_id, "--input", str(home.ones)
    )

    assert code == 0, out
    assert re.search(r"^\s+auc  n/a \(one class in the input: 1\)$", out, re.M), out
    assert "nan" not in out.lower()
    # a row and a column for each of the model's classes: the rows predicted 0 are shown, and class 0
    # (absent from the input) has its row of zeros
    table = matrix(out)
    assert table["header"] == ["0", "1"], out
    assert table["0"] == ["0", "0"], out
    wrong, right = map(int, table["1"])
    assert wrong + right == 50 and wrong > 0, out  # the model is not perfect on these rows

    stored_as = re.search(r"as (evaluation/\S+\.json)$", out.strip(), re.M)
    assert stored_as is not None, out
    text = open_registry().read_text(home.run_id, stored_as.group(1))
    assert text is not None
    stored = strict_json(text)
    assert stored["metrics"]["auc"] is None
    assert set(stored["metrics"]) == {"accuracy", "logloss", "auc"}
    assert stored["undefined_metrics"] == {"auc": "one class in the input: 1"}
    assert stored["classes"] == ["0", "1"]
    assert stored["confusion_matrix"] == {"1": {"0": wrong, "1": right}}
    assert stored["metrics"]["accuracy"] == pytest.approx(right / 50)


def test_two_classes_keep_their_auc(home: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    both = tablesets.write(tablesets.binary_frame(80, seed=8), home.ones.parent, "both")
    code, out, _ = rayline_here(capsys, "evaluate", str(home.spec_file), "--model", home.run_id, "--input", str(both))

    assert code == 0, out
    assert re.search(r"^\s+auc  [01]\.\d{4}$", out, re.M), out
    assert "n/a" not in out
    assert matrix(out)["header"] == ["0", "1"]


def test_the_ray_engine_reduces_the_same(home: Trained, ray_session: object) -> None:
    local = evaluate(home.spec, model=home.run_id, input=str(home.ones))
    on_ray = home.spec.model_copy(update={"predict": home.spec.predict.model_copy(update={"engine": "ray"})})
    pooled = evaluate(on_ray, model=home.run_id, input=str(home.ones))

    assert (local.engine, pooled.engine) == ("local", "ray")
    for result in (local, pooled):
        assert isinstance(result, Evaluation)
        assert "auc" not in result.metrics
        assert result.undefined == {"auc": "one class in the input: 1"}
        assert result.classes == ["0", "1"]
    assert pooled.metrics == pytest.approx(local.metrics)
    assert pooled.confusion == local.confusion


def test_any_metric_that_is_not_finite_is_undefined_not_nan() -> None:
    """A NaN would make the stored JSON invalid and compare as neither better nor worse when promoting."""
    reduced = Reduced({"rmse": float("nan"), "mae": 0.5})
    assert reduced.metrics == {"mae": 0.5}
    assert reduced.undefined == {"rmse": "not a finite number (nan)"}


def test_a_report_shows_an_undefined_metric_and_every_class(home: Trained) -> None:
    """The spec's own evaluation with one class (stored as the `evaluate` stage stores it): the
    report says n/a with the reason, and its confusion matrix has the model's classes in order."""
    from rayline.stages.evaluate import _store
    from rayline.stages.report import build_report

    one = evaluate(home.spec, model=home.run_id, input=str(home.ones))
    _store(open_registry(), home.run_id, one, None, other=False)  # as if the validation split held class 1 only
    folder = build_report(home.run_id)
    page = (folder / "report.html").read_text()
    assert "<td>auc</td><td>n/a (one class in the input: 1)</td>" in page, page
    shown = json.loads((folder / "report.json").read_text())
    confusion = next(f for f in shown["figures"] if f["file"] == "confusion_matrix.png")
    assert confusion["xticklabels"] == ["0", "1"], confusion


def test_labels_of_another_type_are_named_with_their_types(home: Trained) -> None:
    """Labels stored as text for a model trained on integers: the message shows both types."""
    from rayline.errors import DataError

    frame = tablesets.binary_frame(200, seed=9)
    texts = tablesets.write(frame.assign(clicked=frame["clicked"].astype(str)), home.ones.parent, "texts")
    with pytest.raises(DataError) as info:
        evaluate(home.spec, model=home.run_id, input=str(texts))
    assert str(info.value).endswith("is not one of the model's classes (0, 1: int)"), info.value
    assert "(str)" in str(info.value)
