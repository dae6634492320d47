"""free_port(): ports outside the ranges Ray and the kernel hand out, free when picked."""

from __future__ import annotations

import socket

import pytest

from rayline.errors import ServeError
from rayline.serving.ports import free_port


def test_picks_a_bindable_port_below_the_ephemeral_range() -> None:
    avoid: set[int] = set()
    ports = [free_port("127.0.0.1", avoid) for _ in range(20)]
    assert len(set(ports)) == 20 and set(ports) == avoid
    assert all(20000 <= port < 30000 for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))  # raises if it was not free


def test_skips_ports_in_use_and_says_when_none_is_left() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        taken = held.getsockname()[1]
        other = free_port("127.0.0.1", {taken})
        everything_else = set(range(20000, 30000)) - {taken, other}
        assert free_port("127.0.0.1", set(everything_else)) == other
        with pytest.raises(ServeError, match=r"no free port on 127\.0\.0\.1"):
            free_port("127.0.0.1", everything_else | {other})


def test_picks_do_not_follow_the_global_random_seed() -> None:
    """Two processes that seeded ``random`` alike (a training run, a library) still pick apart."""
    import random

    state = random.getstate()
    try:
        random.seed(0)
        first = [free_port() for _ in range(3)]
        random.seed(0)
        again = [free_port() for _ in range(3)]
    finally:
        random.setstate(state)
    assert first != again
