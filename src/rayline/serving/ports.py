"""Picking a TCP port that is still free when it is bound, seconds later."""

from __future__ import annotations

import random
import socket

from rayline.errors import ServeError

_RANGE = range(20000, 30000)
# Not the global generator: a library or a training run seeding it would give two processes
# starting at once the same picks (seen: two test workers, one gRPC port).
_PICK = random.SystemRandom()


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """A port free on `host` now, from 20000-29999: above Ray's worker ports, below the kernel's ephemeral range.

    Ports are bound seconds after they are picked, once Ray has started and opened many
    outgoing connections; a port from the ephemeral range (what binding port 0 gives) can be
    taken by one of those in between, and HAProxy then fails with "Address already in use".
    The port picked is added to `avoid`, so that several picks differ.
    """
    avoid = set() if avoid is None else avoid
    for port in _PICK.sample(_RANGE, len(_RANGE)):  # random: two services starting together differ
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            avoid.add(port)
            return port
    raise ServeError(f"no free port on {host} in 20000-29999", hint="pass a --port")
