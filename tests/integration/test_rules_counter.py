"""RedisSendCounter: the waiting takes when a round trip fails with an error other than Redis being away
(every take waiting on it gets the error, none is left waiting, and the next takes still go through), and
its leases: several processes together stay within a bucket and a daily limit, exact near the limit."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import redis

from herald.limits import ALLOWED, RATE_LIMITED
from herald.limits.lease import LEASE_SECONDS, MAX_CHUNK
from herald.limits.redis_counter import RedisSendCounter
from tests.integration.test_service_rules import REDIS_URL, _redis_or_skip, _unavailable
from tests.support import TcpProxy


def test_a_failed_round_trip_is_raised_to_every_waiting_take_and_the_next_go_through() -> None:
    _redis_or_skip()
    prefix = str(uuid.uuid4())
    client = redis.Redis.from_url(REDIS_URL)
    client.set(f"{prefix}-tokens-normal", "not a bucket", ex=60)  # HMGET on a string: WRONGTYPE in the script
    counter = RedisSendCounter(REDIS_URL)
    outcomes: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        try:
            counter.take(f"{prefix}-tokens-normal", 1000.0, 1000, [(f"{prefix}-sms-day-count", 10)])
            outcome = "allowed"
        except redis.ResponseError:
            outcome = "error"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=take) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20.0)
    assert not any(t.is_alive() for t in threads)  # no take left waiting for an answer that never comes
    assert outcomes == ["error"] * 30
    assert client.get(f"{prefix}-sms-day-count") is None  # nothing counted by the failed script
    assert counter.take(f"{prefix}-tokens-team", 1000.0, 1000, [(f"{prefix}-sms-day-count", 10)]) == ALLOWED
    assert client.get(f"{prefix}-sms-day-count") == b"1"
    counter.close()


def _hammer(
    counters: list[RedisSendCounter], threads_each: int, takes_each: int, take: Callable[[RedisSendCounter], int]
) -> list[int]:
    outcomes: list[int] = []
    lock = threading.Lock()

    def run(counter: RedisSendCounter) -> None:
        mine = [take(counter) for _ in range(takes_each)]
        with lock:
            outcomes.extend(mine)

    threads = [threading.Thread(target=run, args=(c,)) for c in counters for _ in range(threads_each)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60.0)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def test_two_counters_leasing_from_one_small_bucket_never_pass_it() -> None:
    """Two processes' leases come out of one bucket and one daily count: together they stay within both."""
    _redis_or_skip()
    prefix = str(uuid.uuid4())
    client = redis.Redis.from_url(REDIS_URL)
    counters = [RedisSendCounter(REDIS_URL), RedisSendCounter(REDIS_URL)]
    refill, size = 0.5, 40  # a bucket of 40, one more every two seconds
    started = time.monotonic()
    rated = _hammer(
        counters, 8, 40, lambda c: c.take(f"{prefix}-tokens-normal", refill, size, [(f"{prefix}-email-day", 10**6)])
    )
    elapsed = time.monotonic() - started
    accepted = rated.count(ALLOWED)
    assert set(rated) == {ALLOWED, RATE_LIMITED}
    assert accepted <= size + elapsed * refill + 1  # the bucket's allowance, not one per process
    daily = _hammer(
        counters, 8, 40, lambda c: c.take(f"{prefix}-tokens-team", 1000.0, 1000, [(f"{prefix}-sms-day", 300)])
    )
    assert daily.count(ALLOWED) <= 300 and set(daily) == {ALLOWED, 1}
    for counter in counters:
        counter.close()  # gives back the daily units held: Redis counts exactly what was accepted
    assert int(client.get(f"{prefix}-email-day") or 0) == accepted
    assert int(client.get(f"{prefix}-sms-day") or 0) == daily.count(ALLOWED)


def test_near_a_daily_limit_every_take_is_exact_and_ended_leases_go_back() -> None:
    _redis_or_skip()
    prefix = str(uuid.uuid4())
    client = redis.Redis.from_url(REDIS_URL)
    counter = RedisSendCounter(REDIS_URL)
    daily = [(f"{prefix}-sms-day", 500)]
    outcomes = [counter.take(f"{prefix}-tokens-normal", 1000.0, 1000, daily) for _ in range(300)]
    assert outcomes == [ALLOWED] * 300
    held = int(client.get(f"{prefix}-sms-day") or 0) - 300
    assert 0 <= held <= MAX_CHUNK  # leased ahead, at most a chunk
    time.sleep(LEASE_SECONDS + 0.1)
    counter.take(f"{prefix}-tokens-test", 1000.0, 1000, ())  # the next round trip gives the ended lease back
    assert client.get(f"{prefix}-sms-day") == b"300"
    outcomes = [counter.take(f"{prefix}-tokens-normal", 1000.0, 1000, daily) for _ in range(210)]
    assert outcomes == [ALLOWED] * 200 + [1] * 10  # the limit reached exactly, as without leases
    assert client.get(f"{prefix}-sms-day") == b"500"
    counter.close()


def test_redis_going_away_leaves_leased_units_in_use_then_allows_and_counts() -> None:
    _redis_or_skip()
    prefix = str(uuid.uuid4())
    proxy = TcpProxy("127.0.0.1", 6379)
    counter = RedisSendCounter(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.2, retry_after=30.0, lease_seconds=60)

    def take() -> int:
        return counter.take(f"{prefix}-tokens-normal", 1000.0, 1000, [(f"{prefix}-sms-day", 10**6)])

    try:
        assert [take() for _ in range(8)] == [ALLOWED] * 8  # leases of 1, 2, 4 and 8: seven units still held
        proxy.cut()
        before = _unavailable()
        assert [take() for _ in range(7)] == [ALLOWED] * 7
        assert _unavailable() == before  # served from the lease, Redis not asked
        assert [take() for _ in range(3)] == [ALLOWED] * 3  # the lease spent: allowed, as Notify does, and counted
        assert _unavailable() - before == 3
    finally:
        counter.close()
        proxy.close()
