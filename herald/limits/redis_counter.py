"""Buckets and daily counts in Redis, shared by every ingest replica, leased to each process in chunks.

A take is served from the process's leases (`lease.LeaseBook`) when it can, with no round trip; only a
key whose lease ran out goes to Redis, asking for one unit plus a chunk. The script grants at most
`min(chunk, floor(available / 8))`, at least one, and counts every unit granted at once (INCRBY, or off
the bucket), so what the replicas hold together never passes a limit, and near one (fewer than 16 left)
every take is exact, refused as it would be without leases.

Takes that do go to Redis share round trips: the first caller to find no round trip in flight takes every
take waiting at that moment to Redis in one script call (leader/follower, no timer, so a lone send never
waits for company); the script applies them one after another, so each is as atomic as if sent alone.
Daily units given back ride on the same call. Redis's own clock times the buckets, so replicas whose
clocks differ still share one rate. Every key of a batch goes to one Redis (no Cluster slots).

When Redis is unreachable the send is allowed (Notify skips the check) and `rate_limit.redis_unavailable`
counts it; after a failure Redis is left alone for `retry_after` seconds so that sends do not each wait
for a timeout. Units already leased are still used meanwhile.
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
from herald.limits.lease import LEASE_SECONDS, LeaseBook, Request

log = logging.getLogger(__name__)

# ARGV[1] the daily counts' TTL, ARGV[2] how many counts get units back (KEYS[1..g], ARGV[3..2+g] the
# units); then per take: refill per second, bucket size, tokens wanted (0: one is held in the process), its
# number of daily counts n and per count its limit and units wanted (0: held). KEYS per take: its bucket,
# then its n daily counts. Returns per take its outcome, the tokens granted, then the units granted per count.
_TAKE = """
local ttl = ARGV[1]
local g = tonumber(ARGV[2])
for i = 1, g do
  local back = math.min(tonumber(redis.call('GET', KEYS[i]) or '0'), tonumber(ARGV[2 + i]))
  if back > 0 then
    redis.call('DECRBY', KEYS[i], back)
  end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function chunk(want, available)
  return math.max(1, math.min(want, math.floor(available / 8)))
end
local out = {}
local k = g + 1
local a = g + 3
while a <= #ARGV do
  local refill = tonumber(ARGV[a])
  local size = tonumber(ARGV[a + 1])
  local want = tonumber(ARGV[a + 2])
  local n = tonumber(ARGV[a + 3])
  local outcome = 0
  local tokens_granted = 0
  if want > 0 then
    local state = redis.call('HMGET', KEYS[k], 'tokens', 'at')
    local tokens = tonumber(state[1])
    local at = tonumber(state[2])
    if tokens == nil or at == nil then
      tokens = size
      at = now
    end
    tokens = math.min(size, tokens + math.max(0, now - at) * refill)
    if tokens < 1 then
      outcome = -1
    else
      tokens_granted = chunk(want, tokens)
      tokens = tokens - tokens_granted
    end
    redis.call('HSET', KEYS[k], 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('EXPIRE', KEYS[k], math.ceil(size / refill) + 1)
  end
  local granted = {}
  for i = 1, n do
    granted[i] = 0
  end
  if outcome == 0 then
    for i = 1, n do
      local wanted = tonumber(ARGV[a + 3 + 2 * i])
      if wanted > 0 then
        local limit = tonumber(ARGV[a + 2 + 2 * i])
        local count = tonumber(redis.call('GET', KEYS[k + i]) or '0')
        if count + 1 > limit then
          outcome = i
          break
        end
        granted[i] = chunk(wanted, limit - count)
      end
    end
    if outcome == 0 then
      for i = 1, n do
        if granted[i] > 0 and redis.call('INCRBY', KEYS[k + i], granted[i]) == granted[i] then
          redis.call('EXPIRE', KEYS[k + i], ttl)
        end
      end
    else
      for i = 1, n do
        granted[i] = 0
      end
    end
  end
  out[#out + 1] = outcome
  out[#out + 1] = tokens_granted
  for i = 1, n do
    out[#out + 1] = granted[i]
  end
  k = k + 1 + n
  a = a + 4 + 2 * n
end
return out
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
    blocking acquire instead of a Condition's, the cheaper wake-up."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self) -> None:
        self._lock.acquire()


class _Take:
    __slots__ = ("args", "done", "error", "grants", "keys", "leads", "outcome")

    def __init__(self, keys: Sequence[str], args: list[float | int]) -> None:
        self.keys = keys
        self.args = args
        self.outcome = ALLOWED
        self.grants = [0] * len(keys)  # units granted per key, the bucket first
        self.error: Exception | None = None  # a fault of the round trip (not Redis being away): raised to all
        self.done = _Gate()  # opened once: with the outcome, or to lead the next round trip
        self.leads = False  # set when this waiting take is handed the next round trip


class RedisSendCounter:
    def __init__(
        self,
        url: str,
        timeout: float = 0.25,
        retry_after: float = 1.0,
        max_batch: int = 256,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(_TAKE)
        self._add = self._redis.register_script(_ADD)
        self._retry_after = retry_after
        self._max_batch = max_batch
        self._leases = LeaseBook(seconds=lease_seconds)
        self._lock = threading.Lock()
        self._waiting: list[_Take] = []
        self._in_flight = False
        self._down_until = 0.0

    def take(self, bucket: str, refill: float, size: int, daily: Sequence[tuple[str, int]]) -> int:
        keys = [bucket, *(key for key, _ in daily)]
        while True:
            planned = self._leases.reserve(keys)
            if planned is None:
                return ALLOWED
            if isinstance(planned, Request):
                break
            planned.wait()  # another take's chunk for a key this one lacks is on its way
        if self._down_until and time.monotonic() < self._down_until:
            self._leases.settle(planned, ALLOWED, [0] * len(keys))
            metrics.incr("rate_limit.redis_unavailable")
            return ALLOWED
        args: list[float | int] = [refill, size, planned.wants[0], len(daily)]
        for (_, limit), want in zip(daily, planned.wants[1:], strict=True):
            args += [limit, want]
        mine = _Take(keys, args)
        try:
            self._round_trip_of(mine)
        except BaseException:
            self._leases.settle(planned, None, mine.grants)
            raise
        self._leases.settle(planned, mine.outcome, mine.grants)
        return mine.outcome

    def take_many(
        self, bucket: str, refill: float, size: int, dailies: Sequence[Sequence[tuple[str, int]]]
    ) -> list[int]:
        """One take after another: most are served from the leases, with no round trip."""
        return [self.take(bucket, refill, size, daily) for daily in dailies]

    def _round_trip_of(self, mine: _Take) -> None:
        """Sends `mine` to Redis, in the round trip in flight's successor or one of its own."""
        with self._lock:
            self._waiting.append(mine)
            leads = not self._in_flight
            self._in_flight = True
        if not leads:
            mine.done.wait()
            if not mine.leads:
                if mine.error is not None:
                    raise mine.error
                return
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

    def _round_trip(self, batch: list[_Take]) -> None:
        given = self._leases.give_backs()
        keys = [key for key, _ in given] + [key for take in batch for key in take.keys]
        args: list[float | int] = [DAILY_COUNT_TTL_SECONDS, len(given), *(units for _, units in given)]
        args += [arg for take in batch for arg in take.args]
        try:
            answer = [int(o) for o in self._script(keys=keys, args=args)]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._unreachable(exc, len(batch))  # units given back are lost: under-admission, never over
            answer = [value for take in batch for value in (ALLOWED, *([0] * len(take.keys)))]
        except Exception as exc:
            for take in batch:
                take.error = exc
                if not take.leads:
                    take.done.set()
            raise
        at = 0
        for take in batch:
            take.outcome = answer[at]
            take.grants = answer[at + 1 : at + 1 + len(take.keys)]
            at += 1 + len(take.keys)
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
        """Gives the daily units this process holds back to Redis (a process that stops without closing
        keeps them counted: under-admission of at most a chunk per daily count), then disconnects."""
        given = self._leases.release()
        if given:
            try:
                self._script(
                    keys=[key for key, _ in given],
                    args=[DAILY_COUNT_TTL_SECONDS, len(given), *(units for _, units in given)],
                )
            except redis.RedisError as exc:
                log.warning("daily units not given back to redis", extra={"error": type(exc).__name__})
        self._redis.close()
