"""Port ranges for tests that exercise the fixed ``--base-port`` layout.

A port picked by binding port 0 lies in the kernel's ephemeral range, where any outgoing
connection of a parallel test may take ``base + 3`` a moment later ("cannot bind ...:
Address already in use" from Envoy). A fixed layout is therefore placed below that range,
where only listeners that ask for a port by number can collide, and each port of the span
is checked free before it is handed out.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def quiet_base_port(span: int = 40, *, attempts: int = 200) -> int:
    """A base port such that ``base .. base + span`` are free now and outside the
    ephemeral range (so no client connection can take one of them later)."""
    high = _ephemeral_low() - span - 1
    rng = random.SystemRandom()
    for _ in range(attempts):
        base = rng.randrange(_LOWEST, high)
        if all(_bindable(base + offset) for offset in range(span + 1)):
            return base
    raise RuntimeError(f"no free range of {span} ports below {high + span + 1}")
