"""Buckets and daily counts in Redis, shared by every ingest replica: one Lua script per round trip.

Concurrent sends share round trips: the first caller to find no round trip in flight takes every take
waiting at that moment to Redis in one script call (leader/follower, no timer, so a lone send never waits
for company); the script applies them one after another, so each is as atomic as if sent alone. Redis's
own clock times the buckets, so replicas whose clocks differ still share one rate. Every key of a batch
goes to one Redis (no Cluster slots).

When Redis is unreachable the send is allowed (Notify skips the check) and `rate_limit.redis_unavailable`
counts it; after a failure Redis is left alone for `retry_after` seconds so that sends do not each wait
for a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import redis

from herald import metrics
from herald.domain.limits import DAILY_COUNT_TTL_SECONDS
from herald.limits import ALLOWED

log = logging.getLogger(__name__)

# ARGV[1] the daily counts' TTL; then per take: its number of daily counts n, refill per second, bucket size
# and its n daily limits. KEYS per take: its bucket, then its n daily counts. Returns one outcome per take.
_TAKE = """
local ttl = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local outcomes = {}
local k = 1
local a = 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local refill = tonumber(ARGV[a + 1])
  local size = tonumber(ARGV[a + 2])
  local state = redis.call('HMGET', KEYS[k], 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = size
    at = now
  end
  tokens = math.min(size, tokens + math.max(0, now - at) * refill)
  local outcome = 0
  if tokens < 1 then
    outcome = -1
  else
    tokens = tokens - 1
    for i = 1, n do
      if tonumber(redis.call('GET', KEYS[k + i]) or '0') + 1 > tonumber(ARGV[a + 2 + i]) then
        outcome = i
        break
      end
    end
    if outcome == 0 then
      for i = 1, n do
        if redis.call('INCR', KEYS[k + i]) == 1 then
          redis.call('EXPIRE', KEYS[k + i], ttl)
        end
      end
    end
  end
  redis.call('HSET', KEYS[k], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[k], math.ceil(size / refill) + 1)
  outcomes[#outcomes + 1] = outcome
  k = k + 1 + n
  a = a + 3 + n
end
return outcomes
"""

# A CSV job's rows at once: KEYS the daily counts, ARGV[1] their TTL, then per key its limit and n.
_ADD = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') + tonumber(ARGV[2 * i + 1]) > tonumber(ARGV[2 * i]) then
    return i
  end
end
for i = 1, #KEYS do
  if redis.call('INCRBY', KEYS[i], ARGV[2 * i + 1]) == tonumber(ARGV[2 * i + 1]) then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
  end
end
return 0
"""


class _Gate:
    """Shut until opened once; one waiter. A bare lock rather than threading.Event: a waiting send pays one
    blocking acquire instead of a Condition's, the cheaper wake-up when every send waits for Redis."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self) -> None:
        self._lock.acquire()


class _Take:
    __slots__ = ("args", "done", "error", "keys", "leads", "outcome")

    def __init__(self, keys: list[str], args: list[float | int]) -> None:
        self.keys = keys
        self.args = args
        self.outcome = ALLOWED
        self.error: Exception | None = None  # a fault of the round trip (not Redis being away): raised to all
        self.done = _Gate()  # opened once: with the outcome, or to lead the next round trip
        self.leads = False  # set when this waiting take is handed the next round trip


class RedisSendCounter:
    def __init__(self, url: str, timeout: float = 0.25, retry_after: float = 1.0, max_batch: int = 256) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(_TAKE)
        self._add = self._redis.register_script(_ADD)
        self._retry_after = retry_after
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Take] = []
        self._in_flight = False
        self._down_until = 0.0

    def take(self, bucket: str, refill: float, size: int, daily: Sequence[tuple[str, int]]) -> int:
        if self._down_until and time.monotonic() < self._down_until:
            metrics.incr("rate_limit.redis_unavailable")
            return ALLOWED
        mine = _Take([bucket, *(key for key, _ in daily)], [len(daily), refill, size, *(limit for _, limit in daily)])
        with self._lock:
            self._waiting.append(mine)
            leads = not self._in_flight
            self._in_flight = True
        if not leads:
            mine.done.wait()
            if not mine.leads:
                if mine.error is not None:
                    raise mine.error
                return mine.outcome
        with self._lock:
            batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        try:
            self._round_trip(batch)
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting[0].leads = True  # the next round trip is the oldest waiter's to make
                    self._waiting[0].done.set()
                else:
                    self._in_flight = False
        return mine.outcome

    def _round_trip(self, batch: list[_Take]) -> None:
        keys = [key for take in batch for key in take.keys]
        args: list[float | int] = [DAILY_COUNT_TTL_SECONDS, *(arg for take in batch for arg in take.args)]
        try:
            outcomes = [int(o) for o in self._script(keys=keys, args=args)]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._unreachable(exc, len(batch))
            outcomes = [ALLOWED] * len(batch)
        except Exception as exc:
            for take in batch:
                take.error = exc
                if not take.leads:
                    take.done.set()
            raise
        for take, outcome in zip(batch, outcomes, strict=True):
            take.outcome = outcome
            if not take.leads:
                take.done.set()

    def _unreachable(self, exc: Exception, sends: int) -> None:
        now = time.monotonic()
        if now >= self._down_until:
            log.warning("redis unreachable: sends are not limited", extra={"error": type(exc).__name__})
        self._down_until = now + self._retry_after
        metrics.incr("rate_limit.redis_unavailable", sends)

    def add(self, daily: Sequence[tuple[str, int, int]]) -> int:
        args: list[int] = [DAILY_COUNT_TTL_SECONDS]
        for _, limit, n in daily:
            args += [limit, n]
        try:
            return int(self._add(keys=[key for key, _, _ in daily], args=args))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._unreachable(exc, sum(n for _, _, n in daily))
            return ALLOWED

    def close(self) -> None:
        self._redis.close()
