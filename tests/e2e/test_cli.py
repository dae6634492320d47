"""The CLI: outputs, exit codes and one-line errors, run through its entry point in this process
(tests/inprocess.py). A real ``rayline`` process where the process is what is tested: the console
script's exit codes, a whole run (Ray, progress on a pipe, variables inherited), and joining a
cluster from a fresh process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from inprocess import rayline_here
from rayline.datasets import TAXI_COLUMNS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPT = Path(sys.executable).with_name("rayline")


@dataclass(frozen=True)
class Done:
    """What a ``rayline`` command left: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


Rayline = Callable[..., Done]


@pytest.fixture
def rayline(capfd: pytest.CaptureFixture[str]) -> Rayline:
    """``rayline ARGS`` in this process; the file descriptors are captured, so output from C++
    (LightGBM, xgboost) counts as a process's would. ``check``: fail unless it exits 0."""

    def run(*args: str, check: bool = True) -> Done:
        done = Done(*rayline_here(capfd, *args))
        if check and done.returncode != 0:
            raise AssertionError(f"rayline {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    return run


def rayline_process(*args: str, check: bool = True) -> Done:
    """``rayline ARGS`` as a user runs it: the installed console script, in a process of its own."""
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"rayline {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return Done(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(proc: Done, *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_the_console_script_exits_2_for_usage_and_1_for_a_failure(tmp_path: Path) -> None:
    """The installed ``rayline`` turns main's outcome into the process's exit code and one line."""
    usage = rayline_process("data", "taxi", "--rows", "0", "--out", str(tmp_path / "x.parquet"), check=False)
    assert_one_line_error(usage, "--rows", "rayline data taxi --help")
    assert usage.returncode == 2
    failed = rayline_process("runs", "show", "0123456789abcdef", check=False)
    assert_one_line_error(failed, "no run with id")
    assert failed.returncode == 1


def test_version(rayline: Rayline) -> None:
    from rayline import __version__

    assert rayline("--version").stdout.strip() == f"rayline {__version__}"


def test_data_taxi_writes_exact_rows(rayline: Rayline, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    proc = rayline("data", "taxi", "--rows", "200_000", "--out", str(out), "--seed", "3")
    assert "200,000" in proc.stdout
    table = pq.read_table(out)
    assert table.num_rows == 200_000
    assert tuple(table.column_names) == TAXI_COLUMNS


def test_data_taxi_with_truth(rayline: Rayline, tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    rayline("data", "taxi", "--rows", "100", "--out", str(out), "--with-truth")
    assert pq.read_schema(out).names == [*TAXI_COLUMNS, "tip_probability"]


def test_data_mnist_png(rayline: Rayline, tmp_path: Path) -> None:
    out = tmp_path / "d"
    rayline("data", "mnist", "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == [str(i) for i in range(10)]
    assert len(list(out.glob("*/*.png"))) == 5000
    assert_one_line_error(rayline("data", "mnist", "--out", str(out), check=False), "already exists", "--overwrite")


def test_data_mnist_parquet(rayline: Rayline, tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    rayline("data", "mnist", "--out", str(out), "--format", "parquet")
    assert pq.read_metadata(out).num_rows == 5000


def test_bad_format_is_one_line(rayline: Rayline, tmp_path: Path) -> None:
    proc = rayline("data", "mnist", "--out", str(tmp_path / "m"), "--format", "jpeg", check=False)
    assert_one_line_error(proc, "--format 'jpeg'", "png or parquet")
    assert proc.returncode == 2
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--out", "trips.txt"], "trips.txt: expected a .parquet or .csv file name"),
        (["--out", "trips.csv", "--trip-scale", "0"], "--trip-scale 0: expected a number > 0"),
    ],
)
def test_bad_taxi_options_are_usage_errors(rayline: Rayline, tmp_path: Path, args: list[str], needle: str) -> None:
    proc = rayline(
        "data",
        "taxi",
        "--rows",
        "10",
        *[a if a.startswith("-") or a[0].isdigit() else str(tmp_path / a) for a in args],
        check=False,
    )
    assert_one_line_error(proc, needle)
    assert proc.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_runs_list_empty_is_friendly(rayline: Rayline) -> None:
    proc = rayline("runs", "list")
    assert "no runs yet" in proc.stdout


def test_validate_example_and_override(rayline: Rayline) -> None:
    proc = rayline("validate", str(EXAMPLES / "mnist.yaml"), "--set", "model.epochs=1")
    assert "epochs: 1" in proc.stdout and "valid" in proc.stderr


def test_spec_errors_are_one_line(rayline: Rayline, tmp_path: Path) -> None:
    proc = rayline("validate", str(EXAMPLES / "taxi.yaml"), "--set", "model.max_dept=3", check=False)
    assert_one_line_error(proc, "taxi.yaml", "model.max_dept: unknown field")
    assert proc.returncode == 2
    assert_one_line_error(rayline("validate", str(tmp_path / "none.yaml"), check=False), "not found")


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize(
    ("command", "spec", "sets", "message"),
    [
        ("train", "taxi", ["scaling.use_gpu=true"], "scaling.use_gpu with 1 worker(s) x gpus_per_worker=1 needs 1 GPU"),
        (
            "tune",
            "mnist",
            ["scaling.use_gpu=true", "scaling.num_workers=2", "scaling.gpus_per_worker=0.5"],
            "needs 1 GPU",
        ),
        (
            "predict",
            "taxi",
            ["predict.num_gpus=0.5", "predict.concurrency=3"],
            "predict.num_gpus=0.5 x 3 actor(s) needs 1.5 GPU",
        ),
        ("evaluate", "mnist", ["predict.num_gpus=1", "predict.concurrency=[2,4]"], "x 2 actor(s) needs 2 GPU"),
        ("serve", "mnist", ["serve.num_gpus=0.25"], "serve.num_gpus=0.25 x 1 replica(s) needs 0.25 GPU"),
    ],
)
def test_gpus_the_machine_lacks_are_one_line(
    rayline: Rayline, command: str, spec: str, sets: list[str], message: str
) -> None:
    """Asked for GPUs the embedded Ray does not have, a command stops at once (Ray would wait forever)."""
    overrides = [arg for s in sets for arg in ("--set", s)]
    proc = rayline(command, str(EXAMPLES / f"{spec}.yaml"), *overrides, check=False)
    assert_one_line_error(proc, message, "this machine has 0", "RAY_ADDRESS")
    assert proc.returncode == 2


def test_debug_shows_traceback(rayline: Rayline, tmp_path: Path) -> None:
    proc = rayline("--debug", "validate", str(tmp_path / "none.yaml"), check=False)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_usage_error_exit_code(rayline: Rayline, tmp_path: Path) -> None:
    proc = rayline("data", "taxi", "--rows", "0", "--out", str(tmp_path / "x.parquet"), check=False)
    assert_one_line_error(proc, "--rows", "rayline data taxi --help")
    assert proc.returncode == 2 and not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["frobnicate"], ["No such command 'frobnicate'", "rayline --help"]),
        (["predict"], ["Missing argument", "rayline predict --help"]),
        (["train", "--bogus-flag", "x.yaml"], ["No such option: --bogus-flag"]),
        (["serve", "x.yaml", "--port", "99999"], ["'--port'", "65535"]),
        (["runs", "list", "--kind", "bogus"], ["--kind 'bogus'", "train, tune, trial, predict"]),
        (["predict", str(EXAMPLES / "taxi.yaml"), "--out", "preds.csv"], ["--out 'preds.csv'", "parquet"]),
    ],
)
def test_usage_errors_are_one_line(rayline: Rayline, args: list[str], needles: list[str]) -> None:
    proc = rayline(*args, check=False)
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2


def test_a_bare_group_prints_its_help(rayline: Rayline) -> None:
    proc = rayline("data", check=False)
    assert proc.returncode == 2 and "Usage: rayline data" in proc.stderr and "taxi" in proc.stderr


def test_doctor(rayline: Rayline, rayline_home: Path) -> None:
    proc = rayline("doctor")
    for key in ("python", "ray", "torch", "xgboost", "cpus", "gpus", "RAY_ADDRESS", "RAYLINE_HOME"):
        assert key in proc.stdout
    assert str(rayline_home) in proc.stdout
    assert "NOT REACHABLE" not in proc.stdout


def test_doctor_marks_what_does_not_answer(rayline: Rayline, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    proc = rayline("doctor", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert rows["RAY_ADDRESS"] == f"127.0.0.1:{port}  NOT REACHABLE: connection refused"
    assert rows["tracking"] == f"http://127.0.0.1:{port}  NOT REACHABLE: connection refused"


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["runs", "--help"]])
def test_help(rayline: Rayline, args: list[str]) -> None:
    assert "Usage" in rayline(*args).stdout


def test_run_does_the_whole_lifecycle(
    rayline: Rayline, tmp_path: Path, rayline_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tablesets
    from rayline.registry import open_registry

    source = tablesets.make_table("multiclass", tmp_path / "data")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: whole\ndata: {{source: {source}, label: grade}}\n"
        "model: {family: xgboost, num_boost_round: 20}\n"
        "tune: {num_samples: 2, space: {max_depth: {randint: [2, 5]}}}\n"
    )

    # stderr is a pipe here, not a terminal: progress comes as lines (first after 1 s, then every 2 s)
    monkeypatch.setenv("RAYLINE_PROGRESS_S", "2")
    proc = rayline_process("run", str(spec))
    progress = proc.stderr.splitlines()
    for stage in ("tune", "predict", "evaluate"):  # a new stage prints at once
        assert any(line.startswith(f"whole: {stage}  [") for line in progress), proc.stderr
    assert "Traceback" not in proc.stderr

    registry = open_registry()
    kinds = sorted(r.kind for r in registry.list_runs("whole"))
    assert kinds == ["predict", "train", "trial", "trial", "tune"]
    best = registry.resolve("whole", "best", metric="valid_loss", mode="min")
    assert "eval_accuracy" in registry.get(best.run_id).metrics  # evaluate stored on the best model
    for stage in ("train", "tune", "predict", "evaluate"):
        assert any(line.split()[:1] == [stage] for line in proc.stdout.splitlines()), proc.stdout
    assert f"model {best.run_id}" in proc.stdout
    (prediction,) = [r for r in registry.list_runs("whole") if r.kind == "predict"]
    assert prediction.parent_id == best.run_id

    # the run wrote the best model's report; `rayline report` rebuilds it on demand
    report = rayline_home / "reports" / best.run_id / "report.html"
    assert report.is_file()
    report.unlink()
    rebuilt = rayline("report", best.run_id[:10])
    assert f"wrote {report}" in rebuilt.stdout and report.is_file()

    monkeypatch.delenv("RAYLINE_PROGRESS_S")
    # In this process: without tune nothing here starts Ray (the table is small), and the
    # process's part (Ray, progress on a pipe) was the run above.
    skipped = rayline("run", str(spec), "--no-tune")
    assert " tune " not in skipped.stdout and "evaluate" in skipped.stdout


def test_a_cluster_address_nothing_answers_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """ray.init retries an unreachable GCS for minutes, silently: rayline checks the port first."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    # a process of its own, as a user's: RAY_ADDRESS inherited, no Ray started in it yet
    proc = rayline_process("train", str(EXAMPLES / "taxi.yaml"), "--set", "scaling.num_workers=2", check=False)
    assert_one_line_error(proc, f"could not join the Ray cluster at RAY_ADDRESS={address}: connection refused")


def test_a_taken_grpc_port_is_one_line(rayline: Rayline) -> None:
    """Checked before Ray starts, as the HTTP port is: Serve would fail later, less clearly."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = rayline(
            "serve", str(EXAMPLES / "taxi.yaml"), "--port", "0", "--set", f"serve.grpc_port={port}", check=False
        )
    assert_one_line_error(proc, f"cannot listen on 127.0.0.1:{port}", "pick another serve.grpc_port")


def test_a_grpc_port_that_is_the_http_port_is_one_line(rayline: Rayline) -> None:
    proc = rayline(
        "serve", str(EXAMPLES / "taxi.yaml"), "--port", "18555", "--set", "serve.grpc_port=18555", check=False
    )
    assert_one_line_error(proc, "serve.grpc_port 18555 is the HTTP port too")


@pytest.mark.parametrize(
    "share", ["challenger", "challenger:0", "challenger:ten", ":10", "challenger:101", "challenger:10.5:3"]
)
def test_a_bad_canary_is_one_line(rayline: Rayline, share: str) -> None:
    proc = rayline("serve", str(EXAMPLES / "taxi.yaml"), "--canary", share, check=False)
    assert_one_line_error(proc, f"--canary {share!r}", "MODEL:PERCENT")
    assert proc.returncode == 2


@pytest.mark.parametrize(
    ("alias", "needle"),
    [("latest", "alias 'latest' is not usable"), ("v2", "alias 'v2' is not usable"), ("9lives", "not usable")],
)
def test_an_unusable_alias_is_one_line(rayline: Rayline, alias: str, needle: str) -> None:
    assert_one_line_error(rayline("promote", "0123456789abcdef", "--alias", alias, check=False), needle)


def test_an_empty_model_listing_says_which_spec(rayline: Rayline) -> None:
    assert "no registered models for spec 'nosuch'" in rayline("models", "list", "--spec", "nosuch").stdout
    assert "no registered models yet" in rayline("models", "list").stdout


def test_promoting_nothing_is_one_line(rayline: Rayline) -> None:
    assert_one_line_error(rayline("promote", "0123456789abcdef", "--alias", "champion", check=False), "no run with id")
    assert "no registered models yet" in rayline("models", "list").stdout


def test_a_bad_progress_interval_is_one_line(rayline: Rayline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLINE_PROGRESS_S", "soon")
    proc = rayline("data", "taxi", "--rows", "10", "--out", str(tmp_path / "t.parquet"), check=False)
    assert_one_line_error(proc, "RAYLINE_PROGRESS_S", "a number > 0")
    assert proc.returncode == 2 and not (tmp_path / "t.parquet").exists()


@pytest.mark.parametrize(
    ("spec", "value", "needles"),
    [
        ("taxi-lightgbm", "model.params.num_leaves=-1", ["model.params: lightgbm refused", "(num_leaves) > (1)"]),
        ("taxi", "model.params.max_depth=-3", ["model.params: xgboost refused", "Parameter max_depth"]),
        ("taxi", "model.objective=binary:nope", ["model.objective: xgboost refused", "binary:nope"]),
        ("taxi", "model.params.max_dept=3", ["model.params: xgboost does not use max_dept", "misspelt"]),
        ("taxi-lightgbm", "model.params.num_leavs=3", ["model.params: lightgbm has no parameter num_leavs"]),
    ],
)
def test_a_value_the_library_refuses_names_the_field(
    rayline: Rayline, rayline_home: Path, spec: str, value: str, needles: list[str]
) -> None:
    """Checked by xgboost or LightGBM, not by the spec's schema: still one line, exit 2, and
    LightGBM's own C++ line about it stays off the terminal."""
    proc = rayline("train", str(EXAMPLES / f"{spec}.yaml"), "--set", "data.rows=3000", "--set", value, check=False)
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2 and "[LightGBM]" not in proc.stderr and "/__w/" not in proc.stderr
