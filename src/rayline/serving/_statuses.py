"""One table from a request's error to the status each transport answers it with.

    error            /predict, /explain, /predict/stream   /v2 (the protocol over REST)   gRPC
    NotExplainable   400                                   -                              -
    DataError        422                                   400                            INVALID_ARGUMENT
    StoreError       503                                   503                            UNAVAILABLE
    RegistryError    404                                   404                            NOT_FOUND
    a full queue     429 + Retry-After                     429 + Retry-After              RESOURCE_EXHAUSTED

The first row an error is an instance of answers it (Ray re-raises a replica's ``DataError`` as
a class that is a ``DataError`` too). An error in no row is the service's own failure: 500 (gRPC
INTERNAL) from each transport's catch-all. The protocol over REST answers 400 for bad content
where rayline's routes answer 422, as the Open Inference Protocol asks. A full queue is refused
before the app runs, by HAProxy at the door (``config.shedding``) or by Ray Serve
(``config.overload_options`` gives it ``OVERLOADED``), as ``{"error": ...}`` (``_overload``) on
every route; the stream's own statuses (a line over the limit: 413, a body with no line: 400) are its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayline.errors import DataError, RaylineError, RegistryError, StoreError
from rayline.serving._explain import NotExplainable


@dataclass(frozen=True)
class Status:
    """What one kind of error is answered with on each transport."""

    http: int  # rayline's JSON routes: /predict, /explain, /predict/stream (before its first line)
    oip_rest: int  # the Open Inference Protocol over REST: /v2/...
    grpc: str  # the protocol over gRPC: a grpc.StatusCode name (grpc is imported only where served)
    hint: bool = False  # whether the answer keeps the error's hint ("see `rayline runs list`")


TABLE: tuple[tuple[type[RaylineError], Status], ...] = (
    (NotExplainable, Status(http=400, oip_rest=400, grpc="FAILED_PRECONDITION")),
    (DataError, Status(http=422, oip_rest=400, grpc="INVALID_ARGUMENT")),
    (StoreError, Status(http=503, oip_rest=503, grpc="UNAVAILABLE", hint=True)),
    (RegistryError, Status(http=404, oip_rest=404, grpc="NOT_FOUND", hint=True)),
)

OVERLOADED = Status(http=429, oip_rest=429, grpc="RESOURCE_EXHAUSTED")
"""A full queue (HAProxy or Ray Serve answers it, with ``Retry-After``; its gRPC code is Serve's own)."""

ANSWERED: tuple[type[RaylineError], ...] = tuple(cls for cls, _ in TABLE)
"""The errors a transport answers from the table: ``except ANSWERED as err``."""


def status_of(err: BaseException) -> Status | None:
    """The row answering ``err``; None: not a request's error (the catch-all's 500)."""
    return next((status for cls, status in TABLE if isinstance(err, cls)), None)


def answer(err: RaylineError) -> tuple[Status, str]:
    """The status of one of ``ANSWERED`` and the text to answer with."""
    status = status_of(err)
    if status is None:
        raise TypeError(f"{type(err).__name__} has no status: it is not a request's error") from err
    return status, str(err) if status.hint else err.message
