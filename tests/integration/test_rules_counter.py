"""RedisSendCounter's waiting takes when a round trip fails with an error other than Redis being away:
every take waiting on it gets the error (none is left waiting), and the next takes still go through."""

from __future__ import annotations

import threading
import uuid

import redis

from herald.limits import ALLOWED
from herald.limits.redis_counter import RedisSendCounter
from tests.integration.test_service_rules import REDIS_URL, _redis_or_skip


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
