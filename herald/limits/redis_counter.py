"""Buckets and daily counts in Redis, shared by every ingest replica: one round trip per send (a Lua script).

Redis's own clock times the bucket, so replicas whose clocks differ still share one rate. When Redis is
unreachable the send is allowed (Notify skips the check) and `rate_limit.redis_unavailable` counts it;
after a failure Redis is left alone for `retry_after` seconds so that sends do not each wait for a timeout.
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

# KEYS[1] the bucket, KEYS[2..] the daily counts; ARGV[1] refill per second, ARGV[2] bucket size,
# ARGV[3] the daily counts' TTL, ARGV[4..] the daily limits (ARGV[i + 2] for KEYS[i]).
_TAKE = """
local refill = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = size
  at = now
end
tokens = math.min(size, tokens + math.max(0, now - at) * refill)
local allowed = tokens >= 1
if allowed then
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(size / refill) + 1)
if not allowed then
  return -1
end
for i = 2, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') + 1 > tonumber(ARGV[i + 2]) then
    return i - 1
  end
end
for i = 2, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  end
end
return 0
"""


class RedisSendCounter:
    def __init__(self, url: str, timeout: float = 0.25, retry_after: float = 1.0) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._take = self._redis.register_script(_TAKE)
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._down_until = 0.0

    def take(self, bucket: str, refill: float, size: int, daily: Sequence[tuple[str, int]]) -> int:
        if self._down_until and time.monotonic() < self._down_until:
            metrics.incr("rate_limit.redis_unavailable")
            return ALLOWED
        keys = [bucket, *(key for key, _ in daily)]
        args = [refill, size, DAILY_COUNT_TTL_SECONDS, *(limit for _, limit in daily)]
        try:
            return int(self._take(keys=keys, args=args))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            with self._lock:
                if time.monotonic() >= self._down_until:
                    log.warning("redis unreachable: sends are not limited", extra={"error": type(exc).__name__})
                self._down_until = time.monotonic() + self._retry_after
            metrics.incr("rate_limit.redis_unavailable")
            return ALLOWED

    def close(self) -> None:
        self._redis.close()
