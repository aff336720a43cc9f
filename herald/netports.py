"""Free TCP ports for the servers a harness starts on this machine (the tests, the benchmark, chaos).

Binding port 0 and closing the socket is racy: the kernel picks that port from its ephemeral range
(net.ipv4.ip_local_port_range), which every outgoing connection draws its local port from, so one can
take it before the server binds it. These ports lie below that range, and are never handed out twice by
one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default, where the setting cannot be read


_PORTS = list(range(_LOWEST, min(32_000, _ephemeral_start())))
random.shuffle(_PORTS)  # several processes drawing at once rarely try the same port


def free_port() -> int:
    """A port nothing on 127.0.0.1 is bound to now, never handed out before by this process."""
    while _PORTS:
        port = _PORTS.pop()  # atomic: threads never get the same port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port left between {_LOWEST} and the ephemeral range")
