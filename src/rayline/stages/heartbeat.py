"""Deadlines that follow progress: a wait on Ray fails once nothing has moved for a while.

A run's total ``timeout_s`` (an hour by default) is the wrong guard for a cluster that cannot
schedule a run's workers or actors: the run would sit silent for that hour. Here the processes
doing the work (Ray Train workers, Tune trials, the prediction pool's actors) send a heartbeat to
a small actor (``Board``) as they read, train and predict; the driver watches it (``watch``) and,
when no heartbeat has come for the stall limit, stops the wait with one line saying what stalled
and what Ray's CPUs are doing.

Heartbeats are throttled in each process (``Pulse``: one message every ``PULSE_EVERY_S`` at
most), so a per-batch call costs a clock read.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rayline.errors import failure_type

PULSE_EVERY_S = 2.0
POLL_EVERY_S = 2.0


class Board:
    """A Ray actor (no CPU) holding the time of the last heartbeat and what it said."""

    def __init__(self) -> None:
        self.last, self.note, self.beats = time.time(), "", 0

    def beat(self, note: str) -> None:
        self.last, self.note, self.beats = time.time(), note, self.beats + 1

    def read(self) -> tuple[float, str, int]:
        """(seconds since the last heartbeat, its note, heartbeats so far)."""
        return time.time() - self.last, self.note, self.beats


class Pulse:
    """A worker's side of the board: ``beat`` as often as you like; at most one message goes out
    every ``PULSE_EVERY_S``. ``Pulse(None)`` (no board: an in-process run) does nothing."""

    def __init__(self, board: Any | None) -> None:
        self._board = board
        self._sent = 0.0

    def beat(self, note: str) -> None:
        if self._board is None:
            return
        now = time.monotonic()
        if now - self._sent >= PULSE_EVERY_S:
            self._sent = now
            self._board.beat.remote(note)

    def batches(self, batches: Iterator[Any], note: str) -> Iterator[Any]:
        """``batches``, with a heartbeat for each one."""
        for n, batch in enumerate(batches, 1):
            self.beat(f"{note} {n}")
            yield batch


def _cpu_line() -> str:
    import ray

    try:
        total = ray.cluster_resources().get("CPU", 0.0)
        free = ray.available_resources().get("CPU", 0.0)
    except Exception:  # the cluster itself may be what stalled
        return "Ray's resources could not be read"
    return f"Ray has {free:g} of {total:g} CPUs free"


def _stop_this_jobs_work(board: Any) -> None:
    """After a stall: kill this driver's actors (Train controllers and workers, trials, the pool)
    and remove its placement groups, rather than leave that to Ray when the driver exits.

    Measured on a busy cluster: a stalled search's Train controller, still running while the
    driver exited, reserved a placement group 38 ms after Ray had ended the job; Ray never removed
    it, and it took 3 CPUs from the cluster as soon as they were free. Best effort: what cannot be
    read or killed is left to Ray."""
    import ray
    import ray._private.state
    import ray._private.worker
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    try:
        job = ray.get_runtime_context().get_job_id()
        keep = board._actor_id.hex()
        core = ray._private.worker.global_worker.core_worker  # type: ignore[attr-defined]

        def alive() -> list[str]:
            table = ray._private.state.state.actor_table(None).values()
            return [a["ActorID"] for a in table if a["JobID"] == job and a["State"] != "DEAD" and a["ActorID"] != keep]

        def reserved() -> list[str]:  # a group's id ends with its job's
            return [g for g, info in placement_group_table().items() if g.endswith(job) and info["state"] != "REMOVED"]

        for actor in alive():
            with contextlib.suppress(Exception):
                core.kill_actor(ray.ActorID.from_hex(actor), True)
        # Ray marks an actor dead before its process is gone, and a controller in its last
        # moments still reserved a group (measured): remove until two passes in a row find none.
        deadline, quiet = time.monotonic() + 15, 0
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            groups = reserved()
            for group in groups:
                with contextlib.suppress(Exception):
                    remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group)))
            quiet = 0 if groups or alive() else quiet + 1
    except Exception:  # Ray's internals moved: Ray cleans up when the job ends
        logging.getLogger(__name__).debug("could not stop the stalled work", exc_info=True)


class Stall:
    """What ``watch`` yields: the board to hand to the workers, and whether it fired."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self.message: str | None = None


def _raise_stalled(signum: int, frame: Any) -> None:
    # A KeyboardInterrupt: the one exception a blocked ``ray.get`` stops for (Ray's signal check
    # in its wait loop ignores the others).
    raise KeyboardInterrupt


# The watch interrupts the main thread with a signal of its own, not SIGINT: Ray Train's SIGINT
# handler asks the run's controller to abort and waits for it, and a controller waiting for
# workers answers only when its wait times out (measured: 3 minutes on a busy cluster).
STALL_SIGNAL = signal.SIGUSR2


@contextmanager
def watch(what: str, stall_s: float, field: str, *, timeout_s: float | None = None) -> Iterator[Stall]:
    """Watch the block's heartbeats: after ``stall_s`` seconds without one (or ``timeout_s`` in
    all), interrupt the main thread and raise ``failure_type(what)`` (``TrainError`` for training,
    ``PredictError`` for batch inference, ...) naming ``what``, the silence, the last
    heartbeat and ``field`` (the spec field to raise; ``timeout_s`` beside it for the total).
    From another thread the interrupt is a SIGINT (Ctrl-C)."""
    import ray

    board: Any = ray.remote(num_cpus=0)(Board).options(max_concurrency=4).remote()
    stall = Stall(board)
    done, lock = threading.Event(), threading.Lock()
    started = time.monotonic()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(STALL_SIGNAL, _raise_stalled) if in_main else None
    total_field = field.rsplit(".", 1)[0] + ".timeout_s"

    def verdict() -> str | None:
        try:
            age, note, beats = ray.get(board.read.remote(), timeout=30)
        except Exception:  # the board is on a node that is gone: time from the start
            age, note, beats = time.monotonic() - started, "", 0
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            return f"{what} did not finish within {timeout_s:g} s ({total_field})"
        if age < stall_s:
            return None
        last = f"last: {note}, {age:.0f} s ago" if beats else "nothing since it started"
        return f"{what} made no progress for {stall_s:g} s ({last}); {_cpu_line()}"

    def poll() -> None:
        while not done.wait(POLL_EVERY_S):
            message = verdict()
            if message is None:
                continue
            with lock:
                if not done.is_set():
                    stall.message = message
                    _thread.interrupt_main(STALL_SIGNAL if in_main else signal.SIGINT)
            return

    watcher = threading.Thread(target=poll, name="rayline-stall-watch", daemon=True)
    watcher.start()
    try:
        yield stall
    except BaseException:  # the interrupt, or the error a run stopped by it raised
        if stall.message is None:
            raise
    finally:
        with lock:
            done.set()
        watcher.join()
        if in_main:
            signal.signal(STALL_SIGNAL, previous)
        with contextlib.suppress(Exception):  # already gone with its node
            ray.kill(board)
    if stall.message is not None:
        _stop_this_jobs_work(board)
        hint = f"a busy or too small cluster (`ray status`); a slow step: raise {field}"
        raise failure_type(what)(stall.message, hint=hint)
