"""Free loopback ports for the listeners we start (TorchServe's, and the tests' servers)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now, taken from below the kernel's ephemeral range.

    A port is only free when asked: java binds it seconds later. Outgoing connections take their
    local ports from the ephemeral range, and in CI one took a TorchServe port in that gap
    ("Failed to bind ... Address already in use"). Below the range only our own listeners compete,
    and this process never hands the same port out twice.
    """
    low = ephemeral_port_range()[0]
    for _ in range(200):
        port = random.randrange(10000, low) if low > 11000 else 0
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
