"""herald/netports.py: ports for harness servers, below the ephemeral range and never handed out twice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from herald import netports


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    ports = [netports.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(20_000 <= port < ephemeral_start for port in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_already_bound_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            free = other.getsockname()[1]
        # pop() takes from the end: the busy port is tried first.
        monkeypatch.setattr(netports, "_PORTS", [free, busy])
        assert netports.free_port() == free
        with pytest.raises(RuntimeError, match="no free port left"):
            netports.free_port()
