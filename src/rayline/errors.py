"""One exception tree for everything rayline raises on purpose.

    RaylineError                 base; ``str(err)`` is one line a user can act on
     +-- SpecError               the spec file, a field in it, or a --set override
     +-- DataError               an input table / image folder / generated dataset
     +-- RegistryError           the MLflow run registry (unknown run id, no runs yet)
     +-- RuntimeStartError       Ray could not be started or joined
     +-- TrainError              training, tuning or batch inference failed
     +-- ServeError              the HTTP service could not start or answer

Errors from dependencies (Ray, MLflow, xgboost, torch, pydantic) are mapped to this tree at
the boundary where they happen, so the CLI and the HTTP edge each map one tree.
"""

from __future__ import annotations

from collections.abc import Iterator


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


class TrainError(RaylineError):
    """Training, tuning or batch inference failed."""


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
