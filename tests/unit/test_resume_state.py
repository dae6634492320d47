"""What ``--resume`` continues from, without Ray: the in-process state, its swap, the spec field."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rayline.errors import SpecError
from rayline.spec import spec_from_dict
from rayline.stages.contexts import LocalContext, saved_state
from rayline.stages.resume_state import local_state, search_key, train_key

FRAMES = {"train": pd.DataFrame({"x": [1.0]}), "valid": pd.DataFrame({"x": [2.0]})}


def checkpoint(folder: Path, round_: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"metrics": {"round": round_}}))
    return folder


def context(workdir: Path, *, resume: bool) -> LocalContext:
    return LocalContext(FRAMES, cpus=1, workdir=workdir, resume=resume)


def test_a_checkpoint_and_the_history_up_to_it_are_kept_together(tmp_path: Path) -> None:
    ctx = context(tmp_path, resume=False)
    assert ctx.resume_from() is None
    ctx.report({"round": 10.0}, checkpoint(tmp_path / "c10", 10))
    ctx.report({"round": 15.0})  # no checkpoint: not in what a resumed run starts from
    ctx.report({"round": 20.0}, checkpoint(tmp_path / "c20", 20))
    ctx.report({"round": 25.0})

    again = context(tmp_path, resume=True)
    folder = again.resume_from()
    assert folder == tmp_path / "latest" / "checkpoint"
    assert json.loads((folder / "meta.json").read_text())["metrics"]["round"] == 20
    assert again.history == [{"round": 10.0}, {"round": 15.0}, {"round": 20.0}]
    assert not (tmp_path / "latest.new").exists()
    # Without resume the state is not read (the train stage clears it for a fresh run).
    assert context(tmp_path, resume=False).resume_from() is None


def test_a_complete_staged_checkpoint_wins_and_a_partial_one_is_ignored(tmp_path: Path) -> None:
    old = tmp_path / "latest"
    checkpoint(old / "checkpoint", 10)
    (old / "history.json").write_text(json.dumps([{"round": 10.0}]))
    staged = tmp_path / "latest.new"
    checkpoint(staged / "checkpoint", 20)
    assert saved_state(tmp_path) == old  # no history.json yet: the copy may be partial

    (staged / "history.json").write_text(json.dumps([{"round": 10.0}, {"round": 20.0}]))
    assert saved_state(tmp_path) == staged  # the crash came between writing it and the swap
    ctx = context(tmp_path, resume=True)
    assert ctx.history[-1] == {"round": 20.0}
    assert ctx.resume_from() == tmp_path / "latest" / "checkpoint"  # the swap was finished
    assert not staged.exists()


def test_nothing_saved_means_nothing_to_resume(tmp_path: Path) -> None:
    assert saved_state(tmp_path) is None
    assert context(tmp_path, resume=True).resume_from() is None


def test_resume_state_is_keyed_by_the_whole_spec(rayline_home: Path) -> None:
    raw = {"name": "keyed", "data": {"source": "builtin:taxi"}, "model": {"family": "xgboost"}}
    spec = spec_from_dict(raw)
    other = spec_from_dict(raw, ["model.num_boost_round=7"])
    assert train_key(spec) == f"keyed-train-{spec.fingerprint()}" == train_key(spec_from_dict(raw))
    assert train_key(other) != train_key(spec) and search_key(spec) != train_key(spec)
    assert local_state(spec) == rayline_home / "resume" / train_key(spec)


def test_max_failures_is_checked() -> None:
    raw = {"name": "f", "data": {"source": "builtin:taxi"}, "model": {"family": "xgboost"}}
    assert spec_from_dict(raw).scaling.max_failures == 1
    assert spec_from_dict(raw, ["scaling.max_failures=-1"]).scaling.max_failures == -1
    with pytest.raises(SpecError, match=r"scaling\.max_failures"):
        spec_from_dict(raw, ["scaling.max_failures=-2"])


def test_a_resumed_trial_reports_each_step_once() -> None:
    from rayline.stages.trials import steps_once

    reports = [{"round": 10.0, "v": 1.0}, {"round": 20.0, "v": 2.0}, {"round": 20.0, "v": 2.5}, {"round": 30.0}]
    final = {"round": 20.0, "rounds_run": 30.0}
    assert steps_once([*reports, final], "round") == [reports[0], reports[2], reports[3], final]


def test_the_cli_offers_resume() -> None:
    from typer.testing import CliRunner

    from rayline.cli import app

    for command in ("train", "tune"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "--resume" in result.output


def test_the_cli_passes_resume_and_shows_failed_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import rayline.stages.tune as tune_stage
    from rayline.cli import app
    from rayline.stages.trials import FailedTrial, TuneResult

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ndata: {source: 'builtin:taxi'}\nmodel: {family: xgboost}\n")
    calls: list[dict[str, object]] = []

    def fake_tune(loaded: object, **kwargs: object) -> TuneResult:
        calls.append(kwargs)
        failed = [FailedTrial(run_id="f1", config={"eta": 9.0}, error="XGBoostError: eta out of range")]
        return TuneResult("t1", "b1", {"eta": 0.1}, {"valid_loss": 0.5}, trials=2, seconds=1.0, failed=failed)

    monkeypatch.setattr(tune_stage, "tune", fake_tune)
    result = CliRunner().invoke(app, ["tune", str(spec), "--resume"])
    assert result.exit_code == 0, result.output
    assert calls and calls[0]["resume"] is True
    assert "trial run f1 {'eta': 9.0} failed: XGBoostError: eta out of range" in result.output
