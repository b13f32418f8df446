"""A free TCP port on 127.0.0.1, for the servers a harness or a test starts (the OS picks it; a race with another
process binding it in between is possible but harmless: the server then fails to start and says so)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
