"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

from herald.clients import IngestClient
from herald.domain import statuses as st

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def final_status(client: IngestClient, notification_id: str, timeout: float = 20.0) -> str:
    """Follows a notification until its status is final (NOT_FOUND until the db dispatcher stored it)."""
    status = client.follow(notification_id, timeout, interval=0.02)
    if status not in st.FINAL:
        raise AssertionError(f"{notification_id} still {status} after {timeout}s")
    return status
