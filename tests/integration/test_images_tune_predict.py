"""Tune, batch predict and evaluate ResNet18 on small image folders, with real Ray and torch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imagesets
from inprocess import own_home
from rayline.errors import DataError
from rayline.registry import open_registry
from rayline.spec import Spec
from rayline.stages.evaluate import evaluate
from rayline.stages.predict import predict
from rayline.stages.report import build_report
from rayline.stages.train import train
from rayline.stages.tune import tune

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class TwoDigits:
    home: Path
    spec: Spec
    run_id: str
    broken: Path  # 0/ and 1/, three digits each, and 1/broken.png, which is not an image


@pytest.fixture(scope="module")
def two_digits(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoDigits]:
    """One two-class digits model (0 and 1) for the tests that only predict or evaluate with it."""
    root = tmp_path_factory.mktemp("two-digits")
    with own_home(root) as home:
        spec = imagesets.spec_for(imagesets.digits(root / "digits", per_class=8, classes=[0, 1]), name="two")
        run_id = train(spec).run_id
        broken = imagesets.digits(root / "other", per_class=3, classes=[0, 1])
        (broken / "1" / "broken.png").write_bytes(b"not a png at all")
        yield TwoDigits(home, spec, run_id, broken)


@pytest.fixture
def two(two_digits: TwoDigits, monkeypatch: pytest.MonkeyPatch) -> TwoDigits:
    """The module's model, its registry this test's."""
    monkeypatch.setenv("RAYLINE_HOME", str(two_digits.home))
    return two_digits


def test_tune_images_asha(ray_session: object, tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=12, classes=[0, 1, 7])
    space = {"lr": {"loguniform": [0.0005, 0.005]}, "batch_size": {"choice": [16, 32]}}
    spec = imagesets.spec_for(
        source, name="tune-img", model={"epochs": 2}, tune={"num_samples": 3, "scheduler": "asha", "space": space}
    )

    result = tune(spec)

    assert result.trials == 3
    assert 0.0005 <= result.best_config["lr"] <= 0.005 and result.best_config["batch_size"] in (16, 32)
    registry = open_registry()
    trials = registry.list_runs("tune-img", kind="trial")
    assert len(trials) == 3 and all("valid_accuracy" in t.metrics for t in trials)
    best = registry.resolve("tune-img", "best", metric="valid_accuracy", mode="max")
    assert best.run_id == result.best_run_id
    assert best.params["model.lr"] == str(result.best_config["lr"])
    folder = registry.checkpoint_dir(best.run_id)
    assert (folder / "model.pt").is_file() and (folder / "meta.json").is_file()


def test_unknown_tune_name_is_rejected(ray_session: object, tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=3, classes=[0, 1])
    spec = imagesets.spec_for(source, tune={"space": {"max_depth": {"randint": [2, 4]}}})
    with pytest.raises(Exception, match="resnet18 cannot tune 'max_depth'"):
        tune(spec)


def test_predict_and_evaluate_images(ray_session: object, tmp_path: Path) -> None:
    source = imagesets.colours(tmp_path / "colours", per_class=20)
    spec = imagesets.spec_for(
        source, name="colours", data={"image": {"mode": "RGB", "size": [20, 30]}}, model={"epochs": 3}
    )
    trained = train(spec)

    # default input: the validation split of the folder, predicted in this process (engine: auto)
    result = predict(spec, model=trained.run_id)
    assert result.engine == "local"
    out = pd.read_parquet(result.output)
    assert list(out.columns) == ["label", "key", "path", "predicted_label", "probability", "probabilities"]
    assert result.rows == len(out) > 0
    assert set(out["predicted_label"]) <= {"blue", "green", "red"}
    assert all(
        Path(p).is_file() and Path(p).parent.name == lab for p, lab in zip(out["path"], out["label"], strict=True)
    )
    probs = np.stack(out["probabilities"].to_numpy())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["probability"], probs.max(axis=1))
    assert sorted(p.name for p in result.output.parent.iterdir()) == [result.output.name]
    # the actor pool (predict.engine: ray) reads, decodes and predicts the same images alike
    on_ray = spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": "ray"})})
    pooled = predict(on_ray, model=trained.run_id, output=str(tmp_path / "pooled.parquet"))
    assert pooled.engine == "ray"
    pooled_out = pd.read_parquet(pooled.output).sort_values("path").reset_index(drop=True)
    local_out = out.sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(pooled_out.drop(columns="probabilities"), local_out.drop(columns="probabilities"))
    np.testing.assert_allclose(np.stack(pooled_out["probabilities"]), np.stack(local_out["probabilities"]), rtol=1e-5)

    evaluation = evaluate(spec, model=trained.run_id)
    assert evaluation.rows == len(out)
    pooled_eval = evaluate(on_ray, model=trained.run_id)
    assert (evaluation.engine, pooled_eval.engine) == ("local", "ray")
    assert pooled_eval.metrics == pytest.approx(evaluation.metrics, rel=1e-4)
    assert (pooled_eval.per_class, pooled_eval.confusion) == (evaluation.per_class, evaluation.confusion)
    # the same validation images as training: the split agrees between the two readers
    assert evaluation.metrics["accuracy"] == pytest.approx(trained.metrics["valid_accuracy"], abs=1e-6)
    assert evaluation.metrics["accuracy"] == pytest.approx((out["label"] == out["predicted_label"]).mean())
    assert set(evaluation.per_class) == set(out["label"])
    for label, row in evaluation.confusion.items():
        assert sum(row.values()) == (out["label"] == label).sum()
        assert evaluation.per_class[label] == pytest.approx(row.get(label, 0) / sum(row.values()))
    assert open_registry().get(trained.run_id).metrics["eval_accuracy"] == pytest.approx(evaluation.metrics["accuracy"])
    report = build_report(trained.run_id)
    assert {"learning_losses.png", "learning_scores.png", "confusion_matrix.png", "per_class_accuracy.png"} <= {
        p.name for p in report.glob("*.png")
    }

    # another folder of other-sized images: resized to the model's input, written where asked
    other = imagesets.colours(tmp_path / "other", per_class=4, seed=7)
    target = tmp_path / "out" / "other.parquet"
    explicit = predict(spec, model=trained.run_id, input=str(other), output=str(target))
    assert explicit.rows == 12 and pd.read_parquet(target)["path"].str.startswith(str(other)).all()


def test_evaluate_rejects_unknown_classes(two: TwoDigits, tmp_path: Path) -> None:
    strange = imagesets.digits(tmp_path / "strange", per_class=3, classes=[0, 5])
    with pytest.raises(DataError, match=r"label '5' \(str\) is not one of the model's classes \('0', '1': str\)"):
        evaluate(two.spec, model=two.run_id, input=str(strange))


def on_engine(spec: Spec, engine: str, **predict: object) -> Spec:
    return spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": engine, **predict})})


# Separate tests: pytest keeps the failed pipeline's logged error, and with it its actor, until the test ends.
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_predict_undecodable_file_fails(two: TwoDigits, tmp_path: Path, engine: str) -> None:
    target = tmp_path / "out" / "p.parquet"
    with pytest.raises(DataError, match=r"broken\.png: not a decodable image"):
        predict(on_engine(two.spec, engine), model=two.run_id, input=str(two.broken), output=str(target))
    assert not target.exists() and (not target.parent.exists() or list(target.parent.iterdir()) == [])


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_predict_undecodable_file_skipped_on_request(two: TwoDigits, tmp_path: Path, engine: str) -> None:
    spec = on_engine(two.spec, engine)
    skipping = spec.model_copy(update={"data": spec.data.model_copy(update={"on_bad_file": "skip"})})
    target = tmp_path / "out" / "p.parquet"
    result = predict(skipping, model=two.run_id, input=str(two.broken), output=str(target))
    assert result.engine == engine and result.rows == 6
    assert not pd.read_parquet(target)["path"].str.endswith("broken.png").any()


def test_bfloat16_predictions_match_float32(two: TwoDigits, tmp_path: Path) -> None:
    """``predict.precision: bfloat16`` (in process and on the actor pool) stays close to float32."""

    def probabilities(precision: str, engine: str) -> np.ndarray:
        result = predict(
            on_engine(two.spec, engine, precision=precision),
            model=two.run_id,
            input=two.spec.data.source,  # all 16 training digits, not only the validation split's few
            output=str(tmp_path / f"{precision}-{engine}.parquet"),
        )
        out = pd.read_parquet(result.output).sort_values("path")
        return np.stack(out["probabilities"].to_numpy())

    exact = probabilities("float32", "local")
    reduced = probabilities("bfloat16", "local")
    assert not np.array_equal(exact, reduced)  # it did compute in another precision
    np.testing.assert_allclose(reduced, exact, atol=0.05)
    np.testing.assert_allclose(probabilities("bfloat16", "ray"), reduced, atol=0.01)
