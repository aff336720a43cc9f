"""The rate-limit tokens and daily-count units one process holds, taken from Redis in chunks (leases).

A send served from a lease costs no round trip. Every unit held was taken atomically in Redis, so the
replicas together never pass a limit; what a lease does cost is under-admission, bounded: a lease lives
`LEASE_SECONDS`, after which its unused tokens are lost (never carried into a later burst) and its unused
daily units are given back to Redis with the next round trip (or at close). The chunk asked for follows
the process's own demand (doubling while leases run out within their life, shrinking to what one life
used when they outlive it, so a quiet service takes one at a time and loses nothing), and Redis grants at
most an eighth of what is left (`redis_counter`), so near a limit every take is exact.

Not thread-safe by itself: RedisSendCounter's takes call it from many threads, so every method takes
this book's own lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from herald.limits import ALLOWED

LEASE_SECONDS = 1.0
MAX_CHUNK = 64
# A key unused this long is forgotten (its chunk size with it), so the book holds only keys in use.
_FORGET_AFTER_SECONDS = 60.0


@dataclass(slots=True)
class _Lease:
    key: str
    daily: bool  # daily units are given back when dropped; rate-limit tokens are lost
    units: int = 0
    expires: float = 0.0
    used: int = 0  # units used from this lease, the requester's own included
    chunk: int = 1  # what the next request asks for
    landed: threading.Event | None = None  # set when the chunk on its way for this key has landed


@dataclass(slots=True)
class Request:
    """What one take asks of Redis: per key (the bucket first, then the daily counts), 0 when one unit is
    already reserved here, else how many units to ask for (this take uses one of them)."""

    keys: Sequence[str]
    wants: list[int]
    landed: threading.Event | None = None  # others wait on it when it asks for more than one


class LeaseBook:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, seconds: float = LEASE_SECONDS, max_chunk: int = MAX_CHUNK
    ) -> None:
        self._clock = clock
        self._seconds = seconds
        self._max_chunk = max_chunk
        self._lock = threading.Lock()
        self._leases: dict[str, _Lease] = {}
        self._give_back: dict[str, int] = {}
        self._next_sweep = clock() + seconds

    def reserve(self, keys: Sequence[str]) -> Request | threading.Event | None:
        """One unit of each key (`keys[0]` the bucket, then the daily counts): None when every one came
        from a lease (they are used); an Event to wait on, then ask again, when a chunk for a missing key is
        already on its way; else the Request to make of Redis, the units held here reserved."""
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now)
            leases = [self._lease(key, i > 0) for i, key in enumerate(keys)]
            held = [self._held(lease, now) for lease in leases]
            if all(held):
                for lease in leases:
                    lease.units -= 1
                    lease.used += 1
                return None
            for lease, has in zip(leases, held, strict=True):
                if not has and lease.landed is not None:
                    return lease.landed
            request = Request(keys, [])
            for lease, has in zip(leases, held, strict=True):
                if has:
                    lease.units -= 1
                    lease.used += 1
                    request.wants.append(0)
                else:
                    request.wants.append(self._next_chunk(lease, now))
            if any(want > 1 for want in request.wants):
                request.landed = threading.Event()
                for lease, want in zip(leases, request.wants, strict=True):
                    if want > 1:
                        lease.landed = request.landed
            return request

    def settle(self, request: Request, outcome: int | None, grants: Sequence[int]) -> None:
        """Redis's answer (None: the round trip failed): granted units beyond this take's one are held;
        units reserved here are put back unless the send used them (a refused send's token stays used,
        as Notify's bucket counts every request); then the takes waiting for this chunk look again."""
        with self._lock:
            now = self._clock()
            for i, (key, want, grant) in enumerate(zip(request.keys, request.wants, grants, strict=True)):
                lease = self._lease(key, i > 0)
                if want == 0:
                    used = outcome == ALLOWED or (i == 0 and outcome is not None and outcome > 0)
                    if not used:
                        lease.units += 1  # into an expired lease, it is dropped with it
                        lease.used = max(0, lease.used - 1)
                elif grant > 0:
                    self._granted(lease, grant, now)
                if request.landed is not None and lease.landed is request.landed:
                    lease.landed = None
        if request.landed is not None:
            request.landed.set()

    def give_backs(self) -> list[tuple[str, int]]:
        """Daily units dropped since last asked, to be given back to Redis."""
        with self._lock:
            taken, self._give_back = self._give_back, {}
        return list(taken.items())

    def release(self) -> list[tuple[str, int]]:
        """Every daily unit held or dropped, to be given back (the process is closing); the book is emptied."""
        with self._lock:
            for lease in self._leases.values():
                self._drop(lease)
            self._leases.clear()
            taken, self._give_back = self._give_back, {}
        return list(taken.items())

    def _lease(self, key: str, daily: bool) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(key, daily)
        return lease

    def _held(self, lease: _Lease, now: float) -> bool:
        if lease.units > 0 and lease.expires <= now:
            self._drop(lease)
        return lease.units > 0

    def _drop(self, lease: _Lease) -> None:
        if lease.daily and lease.units > 0:
            self._give_back[lease.key] = self._give_back.get(lease.key, 0) + lease.units
        lease.units = 0

    def _next_chunk(self, lease: _Lease, now: float) -> int:
        if lease.expires > now:  # the last lease ran out within its life: ask for more
            lease.chunk = min(self._max_chunk, lease.chunk * 2)
        else:  # it outlived its use: ask for what one life used
            lease.chunk = max(1, min(lease.chunk, lease.used))
        return lease.chunk

    def _granted(self, lease: _Lease, grant: int, now: float) -> None:
        """`grant` units, one of them the requester's: the rest join a live lease (and its expiry, so no
        unit outlives LEASE_SECONDS) or start a new one."""
        if not self._held(lease, now):
            lease.expires = now + self._seconds
            lease.used = 0
        lease.units += grant - 1
        lease.used += 1

    def _sweep(self, now: float) -> None:
        """Drops expired leases (daily units queued to give back) and forgets keys long unused."""
        for key, lease in list(self._leases.items()):
            if lease.expires <= now:
                self._drop(lease)
                if lease.expires <= now - _FORGET_AFTER_SECONDS and lease.landed is None:
                    del self._leases[key]
        self._next_sweep = now + self._seconds
