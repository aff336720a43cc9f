"""Buckets and daily counts in the process: right for one ingest replica only (`make run`, tests).

With several replicas each would allow the whole limit, so deployments set HERALD_REDIS_URL.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

from herald.domain.limits import DAILY_COUNT_TTL_SECONDS, Bucket
from herald.limits import ALLOWED, RATE_LIMITED

_PRUNE_EVERY_SECONDS = 60.0


class LocalSendCounter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, Bucket] = {}
        self._daily: dict[str, tuple[int, float]] = {}  # key -> (count, expires)
        self._next_prune = clock() + _PRUNE_EVERY_SECONDS

    def take(self, bucket: str, refill: float, size: int, daily: Sequence[tuple[str, int]]) -> int:
        return self.take_many(bucket, refill, size, (daily,))[0]

    def take_many(
        self, bucket: str, refill: float, size: int, dailies: Sequence[Sequence[tuple[str, int]]]
    ) -> list[int]:
        now = self._clock()
        with self._lock:
            if now >= self._next_prune:
                # Daily keys name their day, so yesterday's are never asked for again.
                self._daily = {k: v for k, v in self._daily.items() if v[1] > now}
                self._next_prune = now + _PRUNE_EVERY_SECONDS
            state = self._buckets.setdefault(bucket, Bucket(float(size), now))
            outcomes: list[int] = []
            # A batch's messages mostly add to the same daily counts: each run of them is taken at once.
            for daily, run in itertools.groupby(dailies):
                outcomes += self._take_run(state, now, refill, size, daily, sum(1 for _ in run))
            return outcomes

    def _take_run(
        self, state: Bucket, now: float, refill: float, size: int, daily: Sequence[tuple[str, int]], n: int
    ) -> list[int]:
        """`n` takes with the same daily counts at one instant, as if one after another: the first get the
        bucket's whole tokens, and of those the first fit the daily counts' room; a take that got a token
        but no room is refused by the first limit reached (its token stays taken)."""
        state.refill(now, refill, size)
        granted = min(n, int(state.tokens)) if state.tokens >= 1 else 0
        state.tokens -= granted  # whole numbers off a float of the bucket's size: exact, as one at a time
        counts = [self._current(key, now) for key, _ in daily]
        room = min((limit - count for (_, limit), (count, _) in zip(daily, counts, strict=True)), default=granted)
        allowed = max(0, min(granted, room))
        if allowed:
            for (key, _), (count, expires) in zip(daily, counts, strict=True):
                self._daily[key] = (count + allowed, expires)
        reached = 0
        if granted > allowed:
            reached = next(
                index
                for index, ((_, limit), (count, _)) in enumerate(zip(daily, counts, strict=True), start=1)
                if count + allowed + 1 > limit
            )
        return [ALLOWED] * allowed + [reached] * (granted - allowed) + [RATE_LIMITED] * (n - granted)

    def add(self, daily: Sequence[tuple[str, int, int]]) -> int:
        now = self._clock()
        with self._lock:
            counts = [self._current(key, now) for key, _, _ in daily]
            for index, ((_, limit, n), (count, _)) in enumerate(zip(daily, counts, strict=True), start=1):
                if count + n > limit:
                    return index
            for (key, _, n), (count, expires) in zip(daily, counts, strict=True):
                self._daily[key] = (count + n, expires)
            return ALLOWED

    def close(self) -> None:
        """Nothing is held outside the process."""

    def _current(self, key: str, now: float) -> tuple[int, float]:
        """A count and when it expires; an expired count starts again from 0 (Redis's TTL)."""
        count, expires = self._daily.get(key, (0, 0.0))
        return (count, expires) if expires > now else (0, now + DAILY_COUNT_TTL_SECONDS)
