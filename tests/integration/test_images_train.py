"""Train ResNet18 on small image folders and parquet: both execution paths, checkpoints, bad data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import imagesets
from rayline.errors import DataError
from rayline.families.resnet.family import build_model
from rayline.registry import open_registry
from rayline.stages.predict import predict
from rayline.stages.train import train

pytestmark = pytest.mark.slow
SCRIPT = Path(sys.executable).with_name("rayline")


def load_checkpoint(run_id: str) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    folder = open_registry().checkpoint_dir(run_id)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.pt", "profile.json"]
    meta = json.loads((folder / "meta.json").read_text())
    # state_dict only: loads with weights_only=True (no pickled code)
    state = torch.load(folder / "model.pt", weights_only=True)
    return meta, state


def test_local_path_trains_digits_and_registers(tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=20)
    spec = imagesets.spec_for(source, model={"epochs": 2})
    reports: list[dict[str, float]] = []

    result = train(spec, on_report=lambda m: reports.append(dict(m)))

    assert result.path == "local"
    assert [r["epoch"] for r in reports[:2]] == [1.0, 2.0]
    # then the best epoch once more, as the final result (its weights are the checkpoint)
    best = max(reports[:2], key=lambda r: r["valid_accuracy"])
    assert reports[2]["best_epoch"] == best["epoch"] and reports[2]["valid_accuracy"] == best["valid_accuracy"]
    assert {"train_loss", "valid_loss", "valid_accuracy", "train_images_per_s"} <= set(result.metrics)
    assert 0.0 <= result.metrics["valid_accuracy"] <= 1.0
    meta, state = load_checkpoint(result.run_id)
    assert meta["family"] == "resnet18"
    images = meta["layout"]
    assert isinstance(images, dict)
    assert images["classes"] == [str(d) for d in range(10)] and images["size"] == [28, 28] and images["mode"] == "L"
    # the course's swap: the first conv takes one channel
    assert state["conv1.weight"].shape == (64, 1, 7, 7) and state["fc.weight"].shape == (10, 512)
    model = build_model(10, 1)
    model.load_state_dict(state)

    run = open_registry().get(result.run_id)
    assert run.family == "resnet18" and run.has_model
    assert run.tags["rayline.data.rows"] == "200" and run.tags["rayline.data.classes"] == "10"
    assert run.params["model.epochs"] == "2"
    assert run.metrics["valid_accuracy"] == pytest.approx(result.metrics["valid_accuracy"])


def test_ray_train_ddp_path_on_colour_images(tmp_path: Path, ray_session: object) -> None:
    source = imagesets.colours(tmp_path / "colours", per_class=16)
    spec = imagesets.spec_for(
        source, name="colours", data={"image": {"mode": "RGB", "size": [20, 30]}}, scaling={"num_workers": 2}
    )

    result = train(spec)

    assert result.path == "ray-train:2"
    assert result.metrics["epoch"] == 1.0 and "valid_accuracy" in result.metrics
    meta, state = load_checkpoint(result.run_id)
    assert meta["layout"] == {
        "classes": ["blue", "green", "red"],
        "mode": "RGB",
        "size": [20, 30],
        "mean": 0.5,
        "std": 0.5,
    }
    assert state["conv1.weight"].shape == (64, 3, 7, 7) and state["fc.weight"].shape == (3, 512)


def test_size_defaults_to_the_first_image_and_others_are_resized(tmp_path: Path) -> None:
    source = imagesets.colours(tmp_path / "colours", per_class=10)
    spec = imagesets.spec_for(source, name="colours", data={"image": {"mode": "RGB", "size": None}})

    result = train(spec)

    from PIL import Image

    first = sorted((source / "blue").iterdir())[0]
    with Image.open(first) as img:
        assert load_checkpoint(result.run_id)[0]["layout"]["size"] == [img.height, img.width]  # type: ignore[index]


def test_images_in_parquet(tmp_path: Path, ray_session: object) -> None:
    folder = imagesets.digits(tmp_path / "digits", per_class=12, classes=[3, 5, 8])
    source = imagesets.to_parquet(folder, tmp_path / "digits.parquet")
    spec = imagesets.spec_for(source, name="digits-parquet")

    result = train(spec)

    meta, _ = load_checkpoint(result.run_id)
    assert meta["layout"]["classes"] == ["3", "5", "8"]  # type: ignore[index]
    assert open_registry().get(result.run_id).tags["rayline.data.rows"] == "36"

    # batch inference on the parquet's validation rows: in process and on the actor pool alike
    outputs = {}
    for engine in ("local", "ray"):
        on = spec.model_copy(update={"predict": spec.predict.model_copy(update={"engine": engine})})
        done = predict(on, model=result.run_id, output=str(tmp_path / f"{engine}.parquet"))
        assert done.engine == engine
        outputs[engine] = pd.read_parquet(done.output).sort_values("key").reset_index(drop=True)
    local, pooled = outputs["local"], outputs["ray"]
    assert list(local.columns) == ["label", "key", "predicted_label", "probability", "probabilities"]
    assert 0 < len(local) < 36 and set(local["label"]) <= {"3", "5", "8"}
    pd.testing.assert_frame_equal(local.drop(columns="probabilities"), pooled.drop(columns="probabilities"))


# ------------------------------------------------------------------------------- bad data
def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        train(imagesets.spec_for(tmp_path / "empty"))


def test_images_without_class_subfolders(tmp_path: Path) -> None:
    digits = imagesets.digits(tmp_path / "digits", per_class=2, classes=[1])
    flat = tmp_path / "flat"
    (digits / "1").rename(flat)
    with pytest.raises(DataError, match="2 images but no class subfolders"):
        train(imagesets.spec_for(flat))


def test_one_class_only(tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=5, classes=[7])
    with pytest.raises(DataError, match=r"only one class \('7'\)"):
        train(imagesets.spec_for(source))


def test_undecodable_file_fails_by_default_and_is_skipped_on_request(tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=6, classes=[0, 1])
    bad = source / "1" / "broken.png"
    bad.write_bytes(b"not a png at all")

    with pytest.raises(DataError, match=r"broken\.png: not a decodable image"):
        train(imagesets.spec_for(source))
    assert not open_registry().list_runs()

    result = train(imagesets.spec_for(source, data={"on_bad_file": "skip"}))
    assert result.skipped == [str(bad)]
    assert open_registry().get(result.run_id).tags["rayline.data.rows"] == "12"


def test_cli_bad_folder_is_one_line_and_nonzero(tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=3, classes=[4])
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: one\ndata: {{source: {source}}}\nmodel: {{family: resnet18, epochs: 1}}\nmetric: valid_accuracy\n"
    )

    proc = subprocess.run([str(SCRIPT), "train", str(spec)], capture_output=True, text=True, timeout=120)

    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "only one class ('4')" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
