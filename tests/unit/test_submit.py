"""What `rayline submit` sends with a job: the spec as loaded and the local files it reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rayline.errors import SpecError
from rayline.spec import load_spec, spec_from_dict
from rayline.submit import entrypoint, package, submit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_spec_travels_as_loaded(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLES / "taxi.yaml", ["model.num_boost_round=7"])
    written = package(spec, tmp_path)
    assert load_spec(written) == spec  # the --set value included, nothing else changed
    assert not (tmp_path / "inputs").exists()  # a built-in dataset is not a file to send


def test_a_local_table_goes_with_the_job_under_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "trips.csv"
    table.write_text("a,b,y\n1,2,0\n3,4,1\n")
    spec = spec_from_dict({"name": "t", "data": {"source": str(table), "label": "y"}, "model": {"family": "xgboost"}})
    job = tmp_path / "job"
    job.mkdir()
    sent = yaml.safe_load(package(spec, job).read_text())
    assert sent["data"]["source"] == "inputs/data-source/trips.csv"
    assert (job / sent["data"]["source"]).read_text() == table.read_text()
    monkeypatch.chdir(job)  # where the job runs: the path is found next to the spec
    assert Path(load_spec("spec.yaml").data.source) == job / "inputs" / "data-source" / "trips.csv"


def test_a_missing_local_file_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    spec = spec_from_dict(
        {"name": "t", "data": {"source": str(tmp_path / "gone.csv"), "label": "y"}, "model": {"family": "xgboost"}}
    )
    with pytest.raises(SpecError, match=r"data\.source: .*gone\.csv not found"):
        package(spec, tmp_path / "job")


def test_only_lifecycle_commands_are_submitted() -> None:
    spec = load_spec(EXAMPLES / "taxi.yaml")
    with pytest.raises(SpecError, match="cannot submit 'serve'"):
        submit(spec, "serve", "http://127.0.0.1:1", on_output=print)


def test_the_job_runs_in_a_copy_of_its_folder_and_keeps_the_exit_status() -> None:
    line = entrypoint("train")
    assert "python -m rayline train spec.yaml" in line and line.endswith("exit $status")
