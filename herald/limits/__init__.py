"""Where the rate-limit buckets and daily counts live: Redis (shared by every ingest replica) or the process.

One call per send takes a token and, if the daily limits allow, adds the message to its daily counts,
atomically, so that concurrent sends on several replicas never pass a limit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# What `take` answers besides the 1-based index of the daily limit the message would pass.
ALLOWED = 0
RATE_LIMITED = -1


class SendCounter(Protocol):
    def take(self, bucket: str, refill: float, size: int, daily: Sequence[tuple[str, int]]) -> int:
        """Takes a token from `bucket` (refilled at `refill` per second up to `size`); then, unless a daily
        (key, limit) would pass its limit, adds one to each daily key. ALLOWED, RATE_LIMITED (nothing
        changed), or the index (from 1) of the first daily limit reached (the token stays taken, as
        Notify's bucket counts every request)."""
        ...

    def take_many(
        self, bucket: str, refill: float, size: int, dailies: Sequence[Sequence[tuple[str, int]]]
    ) -> list[int]:
        """`take` once per element of `dailies`, in order, as if called one after another: a batch's
        messages counted in one go."""
        ...

    def add(self, daily: Sequence[tuple[str, int, int]]) -> int:
        """Adds n to each daily (key, limit, n) unless one would pass its limit: ALLOWED, or the index (from
        1) of the first limit that would be passed, nothing changed (a CSV job counted as a whole)."""
        ...

    def close(self) -> None:
        """Gives back what the process holds (a Redis counter's leased daily units) and disconnects."""
        ...
