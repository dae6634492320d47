"""The lightgbm family in process (no Ray): training loop, checkpoint, predictor, spec section."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rayline.data.table_prepare import prepare_local
from rayline.data.table_schema import TableLayout, infer_task
from rayline.data.tables import TableKind
from rayline.errors import DataError, SpecError
from rayline.families.lightgbm.family import LightGBMFamily, LightGBMPredictor, train_params
from rayline.families.lightgbm.spec import LightGBMModelSpec
from rayline.spec import Spec, load_spec, spec_from_dict
from rayline.stages.contexts import LocalContext

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROWS = 3000
COLORS = ["blue", "green", "red", "yellow", "black", "white"]
GRADES = ["high", "low", "mid"]  # sorted: the class order the model uses


# ------------------------------------------------------------------------------ tables
def _numeric(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "x1": rng.normal(size=ROWS),
        "x2": rng.normal(size=ROWS),
        "count": rng.integers(0, 10, size=ROWS),
        "color": rng.choice(COLORS, size=ROWS),
    }


def binary_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = _numeric(rng)
    logit = 2.0 * cols["x1"] - 1.5 * cols["x2"] + 1.5 * (cols["color"] == "red") + rng.normal(scale=0.5, size=ROWS)
    return pd.DataFrame({**cols, "clicked": (logit > 0).astype(np.int64)})


def multiclass_frame(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = _numeric(rng)
    score = cols["x1"] + 1.0 * (cols["color"] == "blue") + rng.normal(scale=0.3, size=ROWS)
    grade = np.where(score > 0.8, "high", np.where(score < -0.4, "low", "mid"))
    return pd.DataFrame({**cols, "grade": grade})


def regression_frame(seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = _numeric(rng)
    del cols["color"]  # all numeric: predict_items goes through record_matrix
    price = 3.0 * cols["x1"] + 2.0 * cols["x2"] + 0.5 * cols["count"] + rng.normal(scale=0.3, size=ROWS)
    return pd.DataFrame({**cols, "price": price})


def color_only_frame(seed: int = 3) -> pd.DataFrame:
    """A label that depends on the categorical column alone (two of six colors)."""
    rng = np.random.default_rng(seed)
    cols = _numeric(rng)
    return pd.DataFrame({**cols, "warm": np.isin(cols["color"], ["red", "yellow"]).astype(np.int64)})


def make_spec(tmp_path: Path, frame: pd.DataFrame, label: str, **model: Any) -> Spec:
    source = tmp_path / f"{label}.parquet"
    frame.to_parquet(source, index=False)
    categorical = ["color"] if "color" in frame.columns else []
    raw = {
        "name": f"lgb-{label}",
        "data": {"source": str(source), "label": label, "categorical": categorical, "scale": ["count"]},
        "split": {"valid_fraction": 0.25, "seed": 7},
        "model": {"family": "lightgbm", "num_boost_round": 60, "params": {"num_leaves": 15}, **model},
        "train": {"report_every": 10},
    }
    return spec_from_dict(raw)


class Trained:
    def __init__(self, spec: Spec, ctx: LocalContext, frames: dict[str, pd.DataFrame]) -> None:
        self.spec, self.ctx, self.frames = spec, ctx, frames
        assert ctx.checkpoint is not None
        self.checkpoint = ctx.checkpoint
        self.meta = json.loads((ctx.checkpoint / "meta.json").read_text())
        self.final = ctx.history[-1]


def train(tmp_path: Path, frame: pd.DataFrame, label: str, **model: Any) -> Trained:
    spec = make_spec(tmp_path, frame, label, **model)
    prepared = prepare_local(spec)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    ctx = LocalContext(prepared.frames, cpus=2, workdir=workdir)
    LightGBMFamily().train_loop(prepared.config, ctx)
    return Trained(spec, ctx, prepared.frames)


def items_for(rows: pd.DataFrame, meta: dict[str, Any]) -> list[Any]:
    """``rows`` as the service decodes them: validated pydantic records."""
    kind = TableKind()
    body = kind.request_model(meta).model_validate(rows.to_dict(orient="records"))
    return kind.decode_request(body, meta)


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    yield train(tmp_path_factory.mktemp("binary"), binary_frame(), "clicked")


# ------------------------------------------------------------------------------ training
def test_binary_metrics_checkpoint_and_reports(binary_run: Trained) -> None:
    final = binary_run.final
    for key in ("valid_loss", "valid_logloss", "valid_error", "valid_accuracy", "valid_auc", "round", "rounds_run"):
        assert key in final, key
    assert final["valid_auc"] > 0.9
    assert final["valid_loss"] == final["valid_logloss"] < 0.5
    assert final["valid_accuracy"] == pytest.approx(1.0 - final["valid_error"])
    assert 1 <= final["round"] <= final["rounds_run"] <= 60
    # Sparse reports every 10 rounds before the final one, each with its round number.
    rounds = [m["round"] for m in binary_run.ctx.history[:-1]]
    assert rounds == [float(r) for r in range(10, int(final["rounds_run"]), 10)][: len(rounds)] and rounds

    assert sorted(p.name for p in binary_run.checkpoint.iterdir()) == ["meta.json", "model.txt"]
    meta = binary_run.meta
    assert (meta["family"], meta["data_kind"], meta["objective"]) == ("lightgbm", "table", "binary")
    assert meta["metrics"] == final
    assert TableLayout.from_dict(meta["layout"]).categorical == {"color": sorted(COLORS)}
    assert meta["layout"]["scaler"]["count"] == [0.0, 9.0]


def test_binary_checkpoint_is_cut_at_the_best_round(binary_run: Trained) -> None:
    predictor = LightGBMFamily().load(binary_run.checkpoint, cpus=2)
    assert predictor.booster.current_iteration() == int(binary_run.final["round"])


def test_binary_predict_and_predict_items_agree(binary_run: Trained) -> None:
    predictor = LightGBMFamily().load(binary_run.checkpoint, cpus=1)
    valid = binary_run.frames["valid"]
    out = predictor.predict(valid)
    assert list(out.columns) == ["probability", "predicted_label"]
    assert len(out) == len(valid) and set(out["predicted_label"]) <= {0, 1}
    assert ((out["probability"] >= 0) & (out["probability"] <= 1)).all()
    assert (out["predicted_label"] == valid["clicked"]).mean() == pytest.approx(binary_run.final["valid_accuracy"])

    rows = valid.head(200)
    items = predictor.predict_items(items_for(rows, binary_run.meta))
    assert [sorted(i) for i in items[:1]] == [["label", "probability"]]
    assert [i["label"] for i in items] == out["predicted_label"].head(200).tolist()
    np.testing.assert_allclose([i["probability"] for i in items], out["probability"].head(200), rtol=1e-9)
    json.dumps(items)  # JSON-ready: no numpy scalars


def test_importance_names_the_features(binary_run: Trained) -> None:
    family = LightGBMFamily()
    gain = family.importance(binary_run.checkpoint)
    assert list(gain) == ["x1", "x2", "count", "color"]
    assert all(isinstance(v, float) and v >= 0 for v in gain.values())
    assert max(gain, key=gain.__getitem__) == "x1"


def test_intermediate_checkpoint_loads(tmp_path: Path) -> None:
    # No early stopping: every report of 40 rounds leaves a checkpoint; the last of them is kept.
    run = train(tmp_path, binary_frame(seed=5), "clicked", num_boost_round=40, early_stopping_rounds=None)
    assert [m["round"] for m in run.ctx.history] == [10.0, 20.0, 30.0, 40.0]
    assert run.final["rounds_run"] == 40.0
    snapshot = tmp_path / "snapshot"
    seen: list[int] = []

    class Keep(LocalContext):
        def report(self, metrics: Any, checkpoint: Path | None = None) -> None:
            super().report(metrics, checkpoint)
            if checkpoint is not None and metrics["round"] == 20.0:
                import shutil

                shutil.copytree(checkpoint, snapshot)
                seen.append(LightGBMPredictor(snapshot).booster.current_iteration())

    prepared = prepare_local(run.spec)
    (tmp_path / "work2").mkdir()
    LightGBMFamily().train_loop(prepared.config, Keep(prepared.frames, cpus=1, workdir=tmp_path / "work2"))
    assert seen == [20]
    assert json.loads((snapshot / "meta.json").read_text())["metrics"]["round"] == 20.0


def test_multiclass_string_labels(tmp_path: Path) -> None:
    run = train(tmp_path, multiclass_frame(), "grade")
    final = run.final
    assert final["valid_loss"] == final["valid_mlogloss"]
    assert final["valid_accuracy"] > 0.75 and "valid_auc" not in final
    assert run.meta["objective"] == "multiclass"

    predictor = LightGBMFamily().load(run.checkpoint)
    valid = run.frames["valid"]
    out = predictor.predict(valid)
    assert list(out.columns) == ["probability", "predicted_label", "probabilities"]
    assert set(out["predicted_label"]) <= set(GRADES)
    probs = np.stack(out["probabilities"].to_list())
    assert probs.shape == (len(valid), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(out["probability"], probs.max(axis=1))

    rows = valid.head(150)
    items = predictor.predict_items(items_for(rows, run.meta))
    assert [i["label"] for i in items] == out["predicted_label"].head(150).tolist()
    for item, row in zip(items, probs[:150], strict=True):
        assert list(item["probabilities"]) == GRADES
        np.testing.assert_allclose(list(item["probabilities"].values()), row, rtol=1e-9)
        assert item["probability"] == pytest.approx(row.max())


def test_regression(tmp_path: Path) -> None:
    frame = regression_frame()
    run = train(tmp_path, frame, "price", num_boost_round=150)
    final = run.final
    assert final["valid_loss"] == final["valid_rmse"] < 0.3 * frame["price"].std()
    assert 0 < final["valid_mae"] < final["valid_rmse"] * 1.01
    assert "valid_accuracy" not in final and run.meta["objective"] == "regression"

    predictor = LightGBMFamily().load(run.checkpoint)
    valid = run.frames["valid"]
    out = predictor.predict(valid)
    assert list(out.columns) == ["prediction"]
    rmse = float(np.sqrt(((out["prediction"] - valid["price"]) ** 2).mean()))
    assert rmse == pytest.approx(final["valid_rmse"], rel=1e-6)

    rows = valid.head(200)  # all numeric: the float32 record_matrix path
    items = predictor.predict_items(items_for(rows, run.meta))
    assert [sorted(i) for i in items[:1]] == [["prediction"]]
    np.testing.assert_allclose([i["prediction"] for i in items], out["prediction"].head(200), rtol=1e-5, atol=1e-5)


def test_categorical_column_is_split_on_as_categories(tmp_path: Path) -> None:
    run = train(tmp_path, color_only_frame(), "warm")
    assert run.final["valid_accuracy"] == 1.0
    family = LightGBMFamily()
    predictor = family.load(run.checkpoint)
    gain = family.importance(run.checkpoint)
    assert max(gain, key=gain.__getitem__) == "color"
    assert predictor.booster.pandas_categorical == [sorted(COLORS)]

    def decisions(node: dict[str, Any]) -> Iterator[str]:
        if "decision_type" in node:
            yield node["decision_type"]
            yield from decisions(node["left_child"])
            yield from decisions(node["right_child"])

    trees = predictor.booster.dump_model()["tree_info"]
    assert "==" in {d for tree in trees for d in decisions(tree["tree_structure"])}  # a category-set split


# --------------------------------------------------------------------------------- errors
def test_invalid_lightgbm_param_is_a_spec_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"^model\.params: lightgbm refused a value: Check failed: \(num_leaves\) > \(1\)$"
    ):
        train(tmp_path, binary_frame(), "clicked", params={"num_leaves": 1})


def test_objective_that_contradicts_the_label(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"model\.objective binary is a binary objective.*multiclass task"):
        train(tmp_path, multiclass_frame(), "grade", objective="binary")


@pytest.mark.parametrize(
    ("objective", "message"),
    [("lambdarank", "needs query groups"), ("softprob", "unknown lightgbm objective 'softprob'")],
)
def test_bad_objectives_fail_validation(tmp_path: Path, objective: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make_spec(tmp_path, binary_frame(), "clicked", objective=objective)


# ------------------------------------------------------------------------------ the spec
@pytest.mark.parametrize(
    ("objective", "hint", "task"),
    [
        ("auto", "auto", "binary"),
        ("regression_l1", "regression", "regression"),
        ("huber", "regression", "regression"),
        ("Poisson", "regression", "regression"),
        ("binary", "binary", "binary"),
        ("multiclassova", "multiclass", "multiclass"),
        ("softmax", "multiclass", "multiclass"),
    ],
)
def test_task_hint_speaks_infer_task(objective: str, hint: str, task: str) -> None:
    model = LightGBMModelSpec(family="lightgbm", objective=objective)
    assert model.task_hint() == hint
    assert infer_task(pd.Series([0, 1, 0, 1], name="y"), model.task_hint())[0] == task


def test_spec_defaults() -> None:
    model = LightGBMModelSpec(family="lightgbm")
    assert (model.objective, model.num_boost_round, model.early_stopping_rounds) == ("auto", 100, 10)
    assert model.params == {"num_leaves": 31, "learning_rate": 0.1}
    assert model.data_kind == "table" and model.total_steps() == 100
    assert LightGBMFamily.data_kind == "table"


def test_example_matches_taxi_data_and_split() -> None:
    spec = load_spec(EXAMPLES / "taxi-lightgbm.yaml")
    taxi = load_spec(EXAMPLES / "taxi.yaml")
    assert spec.name == "taxi-lightgbm" and isinstance(spec.model, LightGBMModelSpec)
    assert (spec.data, spec.split) == (taxi.data, taxi.split)
    assert set(spec.tune.space) == {"num_leaves", "learning_rate"}


def test_with_trial_and_reports(tmp_path: Path) -> None:
    family = LightGBMFamily()
    spec = make_spec(tmp_path, binary_frame(), "clicked", num_boost_round=95)
    assert family.reports(spec) == 10 and family.tunable(spec) == {"*"}
    trial = family.with_trial(spec, {"num_boost_round": 30, "early_stopping_rounds": 5, "learning_rate": 0.05})
    assert isinstance(trial.model, LightGBMModelSpec)
    assert (trial.model.num_boost_round, trial.model.early_stopping_rounds) == (30, 5)
    assert trial.model.params == {"num_leaves": 15, "learning_rate": 0.05}
    assert isinstance(spec.model, LightGBMModelSpec) and spec.model.params == {"num_leaves": 15}


class _WorkerCtx:
    cpus, rank, world_size = 3, 1, 2


def test_train_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    network = {"num_machines": 2, "machines": "10.0.0.1:1234,10.0.0.2:1234", "local_listen_port": 1234}
    fake = types.ModuleType("ray.train.lightgbm")
    fake.get_network_params = lambda: dict(network)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray.train.lightgbm", fake)
    spec = make_spec(tmp_path, multiclass_frame(), "grade", params={"num_leaves": 7, "n_jobs": 64, "metric": "auc"})
    layout = TableLayout.from_dict(prepare_local(spec).config["layout"])
    assert isinstance(spec.model, LightGBMModelSpec)
    params = train_params(spec.model, spec, layout, _WorkerCtx())  # type: ignore[arg-type]
    assert params == {
        "num_leaves": 7,
        "objective": "multiclass",
        "metric": ["multi_logloss", "multi_error"],
        "num_threads": 3,
        "num_class": 3,
        "seed": 7,
        "verbosity": -1,
        "tree_learner": "data_parallel",
        "pre_partition": True,
        **network,
    }
    gpu = spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"use_gpu": True})})
    assert train_params(spec.model, gpu, layout, _WorkerCtx())["device_type"] == "gpu"  # type: ignore[arg-type]
