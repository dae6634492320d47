"""map_error: every foreign exception rayline knows becomes one class of the errors.py tree, with its text.

The foreign exceptions are built directly (no Ray cluster): Ray's carry their cause or their
worker's traceback text exactly as the driver receives them.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import NamedTuple

import lightgbm.basic
import pyarrow.lib
import pytest
import ray.exceptions
import ray.train
import ray.train.base_trainer
import ray.train.v2.api.exceptions
import ray.tune.error
import torch
import xgboost.core

from rayline import errors
from rayline.errors import (
    DataError,
    DriftError,
    EvaluateError,
    ExplainError,
    JobError,
    PredictError,
    RaylineError,
    RegistryError,
    RuntimeStartError,
    ServeError,
    SpecError,
    StoreError,
    TrainError,
    failure_type,
    map_error,
    read_error,
    root_cause,
)


def task_error(cause: BaseException, traceback: str | None = None) -> ray.exceptions.RayTaskError:
    """What ``ray.get`` raises when a task failed: the cause and its traceback, as one type."""
    text = traceback or f'Traceback (most recent call last):\n  File "job.py", line 3, in f\n{root_cause(cause)}'
    plain = ray.exceptions.RayTaskError(function_name="f", traceback_str=text, cause=cause, proctitle="ray::f")
    return plain.as_instanceof_cause()


# Ray Data's worker traceback, as the text of the error the driver gets (the cause is pickled
# without its own __cause__, so only the text names what the UDF raised).
def data_traceback(last_user_line: str) -> str:
    return textwrap.dedent(f"""\
        Traceback (most recent call last):
          File "rayline/stages/predict.py", line 80, in __call__
            raise DataError("bad column 'x'")
        {last_user_line}

        The above exception was the direct cause of the following exception:

        Traceback (most recent call last):
          File "ray/data/_internal/planner/plan_udf_map_op.py", line 482, in _handle_debugger_exception
        ray.exceptions.UserCodeException: UDF failed to process a data block.""")


def udf_error(last_user_line: str) -> ray.exceptions.RayTaskError:
    return task_error(
        ray.exceptions.UserCodeException("UDF failed to process a data block."), data_traceback(last_user_line)
    )


class Case(NamedTuple):
    make: Callable[[], BaseException]
    during: str
    expected: type[RaylineError]
    text: str  # the message must contain it


HOST_OOM = "Task was killed due to the node running low on memory."
WORKER_TRACE = "[Rank 0]: Traceback (most recent call last):\n  File 'train.py', line 9\nValueError: lr must be > 0"

# One example per KNOWN_FOREIGN entry, an instance of that very class.
CASES: dict[str, Case] = {
    "builtins.FileNotFoundError": Case(
        lambda: FileNotFoundError(2, "No such file or directory", "/data/iris.csv"),
        "reading the data",
        DataError,
        "/data/iris.csv does not exist",
    ),
    "pyarrow.lib.ArrowException": Case(
        lambda: pyarrow.lib.ArrowInvalid("CSV parse error: Expected 3 columns, got 2: 1,2"),
        "reading the data",
        DataError,
        "reading the data failed: ArrowInvalid: CSV parse error: Expected 3 columns, got 2",
    ),
    "xgboost.core.XGBoostError": Case(
        lambda: xgboost.core.XGBoostError("[10:00:00] learner.cc:1: Check failed: num_class\nStack trace:\n  [bt] 0"),
        "training",
        TrainError,
        "xgboost failed: [10:00:00] learner.cc:1: Check failed: num_class",
    ),
    "lightgbm.basic.LightGBMError": Case(
        lambda: lightgbm.basic.LightGBMError("Label must be in [0, 3), but found 7 in label"),
        "tuning",
        TrainError,
        "lightgbm failed: Label must be in [0, 3), but found 7 in label",
    ),
    "torch.OutOfMemoryError": Case(
        lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nSee documentation"),
        "training",
        TrainError,
        "out of memory during training: CUDA out of memory. Tried to allocate 2.00 GiB.",
    ),
    "builtins.MemoryError": Case(MemoryError, "batch inference", PredictError, "out of memory during batch inference"),
    "ray.exceptions.OutOfMemoryError": Case(
        lambda: ray.exceptions.OutOfMemoryError(HOST_OOM),
        "serving",
        ServeError,
        f"out of memory during serving: {HOST_OOM}",
    ),
    "ray.exceptions.GetTimeoutError": Case(
        lambda: ray.exceptions.GetTimeoutError("Get timed out: some object(s) not ready."),
        "evaluation",
        EvaluateError,
        "evaluation timed out",
    ),
    "ray.exceptions.RayTaskError": Case(
        lambda: task_error(ValueError("label column has NaN")),
        "training",
        TrainError,
        "training failed: ValueError: label column has NaN",
    ),
    "ray.exceptions.ActorDiedError": Case(
        ray.exceptions.ActorDiedError,
        "serving",
        ServeError,
        "serving failed: ActorDiedError: The actor died unexpectedly",
    ),
    "ray.exceptions.RayActorError": Case(
        ray.exceptions.RayActorError, "training", TrainError, "training failed: RayActorError: The actor experienced"
    ),
    "ray.exceptions.WorkerCrashedError": Case(
        ray.exceptions.WorkerCrashedError,
        "batch inference",
        PredictError,
        "batch inference failed: WorkerCrashedError: The worker died unexpectedly",
    ),
    "ray.exceptions.ObjectLostError": Case(
        lambda: ray.exceptions.ObjectLostError("00ffabc", None, ""),
        "evaluation",
        EvaluateError,
        "evaluation failed: ObjectLostError: Failed to retrieve object 00ffabc",
    ),
    "ray.train.v2.api.exceptions.TrainingFailedError": Case(
        lambda: ray.train.v2.api.exceptions.WorkerGroupError(WORKER_TRACE, {0: ValueError("lr must be > 0")}),
        "training",
        TrainError,
        "training failed: ValueError: lr must be > 0",
    ),
    "ray.train.base_trainer.TrainingFailedError": Case(
        lambda: ray.train.base_trainer.TrainingFailedError("The Ray Train run failed."),
        "training",
        TrainError,
        "training failed: TrainingFailedError: The Ray Train run failed.",
    ),
    "ray.tune.error.TuneError": Case(
        lambda: ray.tune.error.TuneError("Trials did not complete: [train_fn_0a1b2]"),
        "tuning",
        TrainError,
        "tuning failed: TuneError: Trials did not complete: [train_fn_0a1b2]",
    ),
    "builtins.ConnectionError": Case(
        lambda: ConnectionError("Could not find any running Ray instance.\nPlease specify one with --address"),
        "starting Ray",
        RuntimeStartError,
        "could not join Ray: Could not find any running Ray instance.",
    ),
}


def test_every_known_foreign_type_has_an_example() -> None:
    assert set(CASES) == set(errors.KNOWN_FOREIGN)


@pytest.mark.parametrize("name", errors.KNOWN_FOREIGN)
def test_each_known_foreign_type_maps_by_its_own_rule(name: str) -> None:
    case = CASES[name]
    err = case.make()
    module, _, attr = name.rpartition(".")
    cls = getattr(importlib.import_module(module), attr)  # the name is still where the library keeps it
    assert isinstance(err, cls) and errors._resolve(name) is cls
    # Its own entry matches first (not a broader one above it, not the generic fallback) ...
    assert next(errors._known(err))[0] == name
    # ... and gives the class and the words a user acts on, on one line.
    mapped = map_error(err, during=case.during)
    assert type(mapped) is case.expected
    assert case.text in str(mapped)
    assert "\n" not in str(mapped)


def test_arrow_invalid_is_an_arrow_exception() -> None:
    """ArrowInvalid and its siblings are covered by the one ArrowException entry."""
    assert errors._resolve("pyarrow.lib.ArrowException") is pyarrow.lib.ArrowException
    mapped = map_error(pyarrow.lib.ArrowTypeError("Expected bytes, got a 'int' object"), during="reading the data")
    assert type(mapped) is DataError and "ArrowTypeError: Expected bytes" in mapped.message


def test_ray_train_exports_the_v2_error_it_maps() -> None:
    assert ray.train.TrainingFailedError is ray.train.v2.api.exceptions.TrainingFailedError


def test_hints_say_what_to_change() -> None:
    gpu = map_error(torch.cuda.OutOfMemoryError("CUDA out of memory."), during="training")
    assert gpu.hint is not None and "batch_size" in gpu.hint
    died = map_error(ray.exceptions.WorkerCrashedError(), during="training")
    assert died.hint is not None and "memory" in died.hint
    joining = map_error(ConnectionError("refused"), during="starting Ray")
    assert joining.hint is not None and "RAY_ADDRESS" in joining.hint


def test_rayline_error_inside_a_wrapper_comes_back_as_itself() -> None:
    original = DataError("column 'label' is missing", hint="set target: in the spec")
    try:
        try:
            raise original
        except DataError as inner:
            raise RuntimeError("pipeline failed") from inner
    except RuntimeError as err:
        mapped = map_error(err, during="batch inference")
    assert type(mapped) is DataError and mapped is not original
    assert (mapped.message, mapped.hint) == ("column 'label' is missing", "set target: in the spec")
    assert str(mapped) == "column 'label' is missing (set target: in the spec)"


def test_rayline_error_from_a_task_or_a_train_worker_survives_ray_wrappers() -> None:
    from_task = map_error(task_error(SpecError("unknown family 'svm'")), during="training")
    assert type(from_task) is SpecError and from_task.message == "unknown family 'svm'"
    group = ray.train.v2.api.exceptions.WorkerGroupError("...", {1: ValueError("x"), 0: DataError("no rows")})
    from_worker = map_error(group, during="training")
    assert type(from_worker) is DataError and from_worker.message == "no rows"


def test_known_type_inside_a_ray_wrapper_maps_by_the_innermost() -> None:
    inner = xgboost.core.XGBoostError("Check failed: labels")
    try:
        raise ray.tune.error.TuneError("trial failed") from task_error(inner)
    except ray.tune.error.TuneError as err:
        mapped = map_error(err, during="tuning")
    assert type(mapped) is TrainError and mapped.message == "xgboost failed: Check failed: labels"


@pytest.mark.parametrize(
    ("line", "expected", "message"),
    [
        ("rayline.errors.DataError: bad column 'x'", DataError, "bad column 'x'"),
        ("DataError: bad column 'x'", DataError, "bad column 'x'"),
        ("rayline.errors.SpecError: batch_size must be set", SpecError, "batch_size must be set"),
        ("KeyError: 'label'", PredictError, "batch inference failed: KeyError: 'label'"),
        # Another library's namesake is not rayline's DataError.
        (
            "pandas.errors.DataError: No numeric types",
            PredictError,
            "batch inference failed: DataError: No numeric types",
        ),
    ],
)
def test_ray_data_worker_error_is_read_from_its_text(line: str, expected: type[RaylineError], message: str) -> None:
    mapped = map_error(udf_error(line), during="batch inference")
    assert type(mapped) is expected
    assert mapped.message == message


def test_worker_error_as_plain_text_is_read_too() -> None:
    text = f"Dataset execution failed\n{data_traceback('rayline.errors.DataError: bad column x')}"
    mapped = map_error(RuntimeError(text), during="batch inference")
    assert type(mapped) is DataError and mapped.message == "bad column x"


def test_unknown_errors_fall_back_to_the_stage_class() -> None:
    assert type(map_error(ValueError("x"), during="training")) is TrainError
    served = map_error(ValueError("bad input"), during="serving")
    assert type(served) is ServeError and served.message == "serving failed: ValueError: bad input"
    elsewhere = map_error(ConnectionError("refused"), during="training")
    assert type(elsewhere) is TrainError and elsewhere.message == "training failed: ConnectionError: refused"
    long = map_error(ValueError("y" * 2000), during="training")
    assert len(long.message) == 400


def test_mapped_error_holds_no_foreign_object() -> None:
    """A Ray Dataset lives as long as the failed frames do: the mapped error keeps only text."""
    try:
        raise task_error(ValueError("boom"))
    except ValueError as err:
        mapped = map_error(err, during="batch inference")
    assert mapped.__traceback__ is None and mapped.__cause__ is None and mapped.__context__ is None
    assert all(isinstance(value, str | None) for value in (*mapped.args, *vars(mapped).values()))


def test_mapping_imports_no_library() -> None:
    """errors.py stays light: it looks foreign types up only once their library is imported."""
    code = textwrap.dedent(f"""\
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("errors_alone", {errors.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        mapped = module.map_error(MemoryError(), during="training")
        assert type(mapped).__name__ == "TrainError", mapped
        loaded = {{"torch", "ray", "xgboost", "lightgbm", "pyarrow"}} & set(sys.modules)
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_root_cause_and_read_error_keep_their_behaviour() -> None:
    assert root_cause(task_error(ValueError("a\n  b"))) == "ValueError: a b"
    assert (
        read_error("s3://b/k.csv", FileNotFoundError("b/k.csv"), "the table").message == "s3://b/k.csv does not exist"
    )
    unreadable = read_error("x.csv", ValueError("bad header\nmore"), "the table")
    assert unreadable.message == "x.csv: cannot read the table (bad header)"


def test_actor_that_failed_in_init_names_the_error_without_the_crash_hint() -> None:
    creation = ray.exceptions.RayTaskError(
        function_name="Predictor.__init__",
        traceback_str='Traceback (most recent call last):\n  File "m.py", line 2\nOSError: no model at /m',
        cause=OSError("no model at /m"),
        proctitle="ray::Predictor.__init__",
    )
    mapped = map_error(ray.exceptions.ActorDiedError(creation), during="serving")
    assert type(mapped) is ServeError and mapped.hint is None
    assert mapped.message == "serving failed: OSError: no model at /m"


@pytest.mark.parametrize(
    ("during", "expected"),
    [
        ("training", TrainError),
        ("tuning", TrainError),
        ("the Ray Train run", TrainError),
        ("batch inference", PredictError),
        ("evaluation", EvaluateError),
        ("explaining", ExplainError),
        ("drift", DriftError),
        ("serving", ServeError),
        ("starting Ray", RuntimeStartError),
    ],
)
def test_a_failure_is_named_for_the_work_that_failed(during: str, expected: type[RaylineError]) -> None:
    """Drift, evaluation, explanations and batch inference are not training: each has its class,
    from map_error's fallback, its rules, and the watch and deadline that use ``failure_type``."""
    assert failure_type(during) is expected
    assert type(map_error(ValueError("x"), during=during)) is expected
    assert type(map_error(ray.exceptions.GetTimeoutError("late"), during=during)) is expected
    assert type(map_error(xgboost.core.XGBoostError("Check failed"), during=during)) is expected


def test_the_tree() -> None:
    """What the module's docstring draws: evaluation and explanations are predictions that
    failed; a store that failed is a registry error (the CLI's exit 1) but no unknown run."""
    assert issubclass(EvaluateError, PredictError) and issubclass(ExplainError, PredictError)
    assert issubclass(StoreError, RegistryError)
    for cls in (TrainError, PredictError, DriftError, JobError, RegistryError, ServeError):
        assert cls.__bases__ == (RaylineError,) and not issubclass(cls, SpecError)
    drawn = errors.__doc__ or ""
    assert all(f"+-- {cls.__name__} " in drawn for cls in errors._TREE if cls is not RaylineError)


@pytest.mark.parametrize("cls", [DriftError, EvaluateError, ExplainError, PredictError, StoreError, JobError])
def test_a_workers_error_named_in_its_text_comes_back_as_its_class(cls: type[RaylineError]) -> None:
    mapped = map_error(udf_error(f"rayline.errors.{cls.__name__}: went wrong"), during="batch inference")
    assert type(mapped) is cls and mapped.message == "went wrong"


def test_the_cli_exits_1_for_these_and_2_for_a_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The new classes keep the exit codes they had as TrainError: 1 (2 is for a SpecError)."""
    from rayline import cli

    for raised, code in ((DriftError("profile unreadable"), 1), (ExplainError("x"), 1), (SpecError("y"), 2)):

        def fail(*_: object, error: RaylineError = raised, **__: object) -> None:
            raise error

        monkeypatch.setattr(cli.typer.main, "get_command", lambda _app, fail=fail: type("C", (), {"main": fail})())
        with pytest.raises(SystemExit) as exited:
            cli.main(["anything"])
        assert exited.value.code == code
