"""One exception tree for everything rayline raises on purpose.

    RaylineError                 base; ``str(err)`` is one line a user can act on
     +-- SpecError               the spec file, a field in it, or a --set override
     +-- DataError               an input table / image folder / generated dataset
     +-- RegistryError           the MLflow run registry (unknown run id, no runs yet)
     |    +-- StoreError         the tracking store failed or did not answer
     +-- RuntimeStartError       Ray could not be started or joined
     +-- TrainError              training or tuning failed
     +-- PredictError            batch inference failed
     |    +-- EvaluateError      evaluating a model on labelled data failed
     |    +-- ExplainError       computing a model's explanations failed
     +-- DriftError              comparing new data with a training profile failed
     +-- ServeError              the HTTP service could not start or answer
     +-- JobError                a submitted Ray job could not be submitted, or failed

This module is the one place where the exceptions of Ray, xgboost, LightGBM, torch and Arrow
become this tree: ``map_error(err, during="training")`` returns the error to raise (text only,
so ``from None`` drops the foreign one), and the CLI and the HTTP edge each handle one tree.
``failure_type(during)`` is the class a failure of that work gets; ``KNOWN_FOREIGN`` lists the
foreign types mapped by class. The CLI exits 2 for a ``SpecError`` and 1 for the rest; the
service answers each class with the status of ``rayline.serving._statuses``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator


class RaylineError(Exception):
    """Base class. ``hint`` is an optional short fix appended to the message."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class SpecError(RaylineError):
    """The spec file, one of its fields, or an override is invalid."""


class DataError(RaylineError):
    """Input data is missing, unreadable, or does not match what the spec expects."""


class RegistryError(RaylineError):
    """The run registry cannot answer (unknown run, no runs, unreachable store)."""


class RuntimeStartError(RaylineError):
    """Ray could not be started locally or joined at RAY_ADDRESS."""


class JobError(RaylineError):
    """A Ray Jobs submission was refused, or the job ended other than SUCCEEDED."""


class StoreError(RegistryError):
    """The tracking store failed or did not answer (not: what was asked for does not exist)."""


class TrainError(RaylineError):
    """Training or tuning failed."""


class PredictError(RaylineError):
    """Batch inference failed (a model's predictions on new rows or images)."""


class EvaluateError(PredictError):
    """Evaluating a model on labelled data failed."""


class ExplainError(PredictError):
    """Computing a model's explanations (feature contributions) failed."""


class DriftError(RaylineError):
    """Comparing new data with a model's training profile failed."""


class ServeError(RaylineError):
    """The online service could not start or serve."""


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err``, then each cause inward: Ray's ``.cause`` where it has one, else ``__cause__``."""
    while True:
        yield err
        inner = getattr(err, "cause", None)
        if isinstance(inner, BaseException) and inner is not err:
            err = inner
        elif err.__cause__ is not None:
            err = err.__cause__
        else:
            return


def root_cause(err: BaseException) -> str:
    """``Type: message`` (one line) of the innermost cause: what a user can act on inside Ray's wrappers.

    Ray re-raises a task's or actor's exception as ``RayTaskError`` (the original in ``.cause``,
    its traceback in the text); Train and Tune chain theirs with ``__cause__``.
    """
    *_, err = _chain(err)
    # Innermost messages are short, but some (a crashed subprocess's stderr tail) span lines.
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:500]


def read_error(source: str, err: BaseException, what: str) -> DataError:
    """``source: cannot read <what> (first line of the error)``, or ``source does not exist``.

    Arrow reports a missing file, S3 key or bucket as ``FileNotFoundError`` with the bare path
    (no scheme) as its whole message, which alone reads like no explanation at all.
    """
    if any(isinstance(inner, FileNotFoundError) for inner in _chain(err)):
        return DataError(f"{source} does not exist")
    text = str(err).strip().splitlines()
    return DataError(f"{source}: cannot read {what} ({(text[0] if text else type(err).__name__)[:200]})")


def map_error(err: BaseException, *, during: str) -> RaylineError:
    """``err`` as a rayline error that carries only text (no frames, so no Ray Dataset kept alive).

    ``during`` names the work in a few words ("training", "batch inference", "evaluation",
    "explaining", "drift", "serving", "starting Ray"); it picks the class of a failure
    (``failure_type``: ``PredictError`` for batch inference, ..., else ``TrainError``) and words
    the message.
    Raise the result after the ``except`` block when the failed frames must be freed: inside it,
    even ``raise ... from None`` keeps the foreign error as ``__context__``.
    """
    causes = _causes(err)
    for inner in causes:  # rayline's own error, raised in a worker, survives Ray's wrappers
        if isinstance(inner, RaylineError):
            # Not type(inner): Ray's RayTaskError(DataError) is a DataError too, with its own __init__.
            for cls in type(inner).__mro__:
                if issubclass(cls, RaylineError) and cls.__module__.split(".")[0] == "rayline":
                    return cls(inner.message, hint=inner.hint)
    found = _exception_line(causes)
    if found is not None and (own := _own(*found[:2])) is not None:
        return own(found[2][:400])
    for inner in reversed(causes):  # innermost first: the wrapper nearest the real failure
        for _, rule in _known(inner):
            if (mapped := rule(inner, err, during)) is not None:
                return mapped
    return failure_type(during)(f"{during} failed: {_detail(causes)}"[:400])


def _causes(err: BaseException) -> list[BaseException]:
    """``_chain``, also into Ray Train V2's errors, which hold the worker's exception as an attribute."""
    out: list[BaseException] = []
    inner: BaseException | None = err
    while inner is not None and all(inner is not seen for seen in out):
        out.append(inner)
        failures = getattr(inner, "worker_failures", None)
        first = failures[min(failures)] if isinstance(failures, dict) and failures else None
        links = (getattr(inner, n, None) for n in ("cause", "controller_failure", "health_check_failure"))
        inner = next((e for e in (*links, first, inner.__cause__) if isinstance(e, BaseException)), None)
    return out


# "ValueError: ..." or "rayline.errors.DataError: ..." in the text of a worker's traceback.
_EXCEPTION_LINE = re.compile(r"^(?:([A-Za-z_][\w.]*)\.)?([A-Za-z_]\w*(?:Error|Exception)): (.+)$")


def _exception_line(causes: list[BaseException]) -> tuple[str, str, str] | None:
    """``(module, name, message)`` of the last exception line that is not Ray's own, innermost text first.

    Ray Data passes a worker's exception on as text, ending in its own retry advice; the last
    other line is what the model code actually raised.
    """
    for inner in reversed(causes):
        lines = [line.strip() for line in str(inner).splitlines()]
        found = [m for m in map(_EXCEPTION_LINE.match, lines) if m is not None and not m.group(0).startswith("ray.")]
        if found:
            module, name, message = found[-1].groups()
            return module or "", name, message
    return None


def _own(module: str, name: str) -> type[RaylineError] | None:
    """rayline's class named on an exception line: bare (as ``root_cause`` writes it) or under
    ``rayline.``, not another library's namesake (pandas has a ``DataError`` too)."""
    return _OWN.get(name) if module == "" or module.split(".")[0] == "rayline" else None


def _detail(causes: list[BaseException]) -> str:
    """What failed, in one line: the innermost exception, or the one named in a traceback's text
    (a Ray error's, or any multi-line one)."""
    inner = causes[-1]
    textual = type(inner).__module__.split(".")[0] == "ray" or "\n" in str(inner).strip()
    if textual and (found := _exception_line(causes)) is not None:
        return f"{found[1]}: {found[2]}"
    return root_cause(inner)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), at most 300 characters."""
    lines = str(err).strip().splitlines()
    return lines[0].strip()[:300] if lines else type(err).__name__


def failure_type(during: str) -> type[RaylineError]:
    """The class of a failure during ``during`` (the words ``map_error`` takes): any other work,
    training and tuning among them, fails as ``TrainError``."""
    return _BY_WORK.get(during, TrainError)


def _known(err: BaseException) -> Iterator[tuple[str, _Rule]]:
    """The ``KNOWN_FOREIGN`` entries ``err`` is an instance of, with their rules, in table order."""
    for name, rule in _RULES:
        cls = _resolve(name)
        if cls is not None and isinstance(err, cls):
            yield name, rule


def _resolve(name: str) -> type[BaseException] | None:
    """The class ``module.Name`` if its module is already imported: mapping never imports torch or Ray."""
    module, _, attr = name.rpartition(".")
    cls = getattr(sys.modules.get(module), attr, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


_BY_WORK: dict[str, type[RaylineError]] = {
    "serving": ServeError,
    "starting Ray": RuntimeStartError,
    "batch inference": PredictError,
    "evaluation": EvaluateError,
    "explaining": ExplainError,
    "drift": DriftError,
}
_TREE = (
    RaylineError,
    SpecError,
    DataError,
    RegistryError,
    StoreError,
    RuntimeStartError,
    TrainError,
    PredictError,
    EvaluateError,
    ExplainError,
    DriftError,
    ServeError,
    JobError,
)
_OWN: dict[str, type[RaylineError]] = {c.__name__: c for c in _TREE}
_Rule = Callable[[BaseException, BaseException, str], RaylineError | None]
_HOST_MEMORY = "lower batch_size or concurrency, or run where there is more memory"


def _missing(inner: BaseException, err: BaseException, during: str) -> RaylineError:
    # Arrow's message is the bare path; open()'s puts it in .filename after "[Errno 2] ...".
    path = getattr(inner, "filename", None) or first_line(inner)
    return DataError(f"{path} does not exist")


def _arrow(inner: BaseException, err: BaseException, during: str) -> RaylineError:
    return DataError(f"{during} failed: {type(inner).__name__}: {first_line(inner)}")


def _library(label: str) -> _Rule:
    return lambda inner, err, during: failure_type(during)(f"{label} failed: {first_line(inner)}")


def _out_of_memory(hint: str) -> _Rule:
    def rule(inner: BaseException, err: BaseException, during: str) -> RaylineError:
        detail = f": {first_line(inner)}" if str(inner).strip() else ""
        return failure_type(during)(f"out of memory during {during}{detail}", hint=hint)

    return rule


def _ray(hint: str | None) -> _Rule:
    def rule(inner: BaseException, err: BaseException, during: str) -> RaylineError:
        # An actor whose __init__ raised did not die of anything the hint is about.
        why = None if getattr(inner, "actor_init_failed", False) else hint
        return failure_type(during)(f"{during} failed: {_detail(_causes(err))}"[:400], hint=why)

    return rule


def _timeout(inner: BaseException, err: BaseException, during: str) -> RaylineError:
    return failure_type(during)(f"{during} timed out", hint="raise the spec's timeout_s")


def _joining(inner: BaseException, err: BaseException, during: str) -> RaylineError | None:
    if during != "starting Ray":  # a dropped connection elsewhere is that stage's failure
        return None
    return RuntimeStartError(f"could not join Ray: {first_line(inner)}", hint="check RAY_ADDRESS")


_DIED = "a Ray worker process died, most often for lack of memory; see /tmp/ray/session_latest/logs"

# Most specific first: the first entry an exception is an instance of maps it.
_RULES: tuple[tuple[str, _Rule], ...] = (
    ("builtins.FileNotFoundError", _missing),
    ("pyarrow.lib.ArrowException", _arrow),  # ArrowInvalid, ArrowTypeError, ... (ArrowIOError is OSError)
    ("xgboost.core.XGBoostError", _library("xgboost")),
    ("lightgbm.basic.LightGBMError", _library("lightgbm")),
    ("torch.OutOfMemoryError", _out_of_memory("lower batch_size, or use a GPU with more memory")),
    ("builtins.MemoryError", _out_of_memory(_HOST_MEMORY)),
    ("ray.exceptions.OutOfMemoryError", _out_of_memory(_HOST_MEMORY)),
    ("ray.exceptions.GetTimeoutError", _timeout),
    ("ray.exceptions.RayTaskError", _ray(None)),
    ("ray.exceptions.ActorDiedError", _ray(_DIED)),
    ("ray.exceptions.RayActorError", _ray(_DIED)),
    ("ray.exceptions.WorkerCrashedError", _ray(_DIED)),
    ("ray.exceptions.ObjectLostError", _ray("a node holding intermediate data was lost")),
    ("ray.train.v2.api.exceptions.TrainingFailedError", _ray(None)),
    ("ray.train.base_trainer.TrainingFailedError", _ray(None)),
    ("ray.tune.error.TuneError", _ray(None)),
    ("builtins.ConnectionError", _joining),
)

KNOWN_FOREIGN: tuple[str, ...] = tuple(name for name, _ in _RULES)
"""``module.Class`` of every foreign exception ``map_error`` maps by type (resolved only once imported)."""
