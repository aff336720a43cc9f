"""Notify's limits and trial-mode rules, and the in-process counter that applies them for one replica."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.domain import limits
from herald.limits import ALLOWED, RATE_LIMITED
from herald.limits.local_counter import LocalSendCounter


@pytest.mark.parametrize(
    ("rate_limit", "size", "refill"),
    [
        (3000, 1000, 50.0),  # min(ceil(3000/3)+1, 1000)
        (600, 201, 10.0),
        (60, 21, 1.0),
        (1, 2, 1 / 60),
        (10_000, 1000, 10_000 / 60),
    ],
)
def test_bucket_size_and_refill_are_notifys(rate_limit: int, size: int, refill: float) -> None:
    assert limits.bucket_size(rate_limit) == size
    assert limits.refill_per_second(rate_limit) == pytest.approx(refill)


@pytest.mark.parametrize(
    ("key_type", "rate_limit", "message"),
    [
        ("normal", 3000, "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds"),
        ("team", 3000, "Exceeded rate limit for key type TEAM of 3000 requests per 60 seconds"),
        ("test", 10, "Exceeded rate limit for key type TEST of 10 requests per 60 seconds"),
    ],
)
def test_rate_limit_messages(key_type: str, rate_limit: int, message: str) -> None:
    assert limits.rate_limit_message(key_type, rate_limit) == message


@pytest.mark.parametrize(
    ("kind", "limit", "message"),
    [
        ("sms", 50, "Exceeded send limits (sms: 50) for today"),
        ("email", 250000, "Exceeded send limits (email: 250000) for today"),
        ("international_sms", 100, "Exceeded send limits (international_sms: 100) for today"),
    ],
)
def test_daily_limit_messages(kind: str, limit: int, message: str) -> None:
    assert limits.daily_limit_message(kind, limit) == message


@pytest.mark.parametrize(
    ("notification_type", "international", "expected"),
    [
        ("sms", False, [("sms", 1)]),
        ("sms", True, [("sms", 1), ("international_sms", 3)]),
        ("email", False, [("email", 2)]),
    ],
)
def test_an_international_text_counts_twice(
    notification_type: str, international: bool, expected: list[tuple[str, int]]
) -> None:
    daily = limits.daily_limits(notification_type, international, 1, 2, 3)
    assert [(d.kind, d.limit) for d in daily] == expected


@pytest.mark.parametrize(
    ("key_type", "restricted", "message"),
    [
        ("normal", False, None),
        ("normal", True, limits.TRIAL_MODE_MESSAGE),
        ("team", False, limits.TEAM_KEY_MESSAGE),
        ("team", True, limits.TEAM_KEY_MESSAGE),
        ("test", False, None),
        ("test", True, None),  # test keys send anywhere
    ],
)
def test_who_is_restricted(key_type: str, restricted: bool, message: str | None) -> None:
    assert limits.restriction_message(key_type, restricted) == message


def test_the_restriction_messages_are_notifys_with_a_curly_apostrophe_and_an_en_dash() -> None:
    assert limits.TEAM_KEY_MESSAGE == "Can\u2019t send to this recipient using a team-only API key"
    assert limits.TRIAL_MODE_MESSAGE == (
        "Can\u2019t send to this recipient when service is in trial mode \u2013 "
        "see https://www.notifications.service.gov.uk/trial-mode"
    )


def test_keys_are_notifys() -> None:
    assert limits.bucket_key("abc", "normal") == "abc-tokens-normal"
    assert limits.daily_count_key("abc", "sms", datetime(2026, 3, 1, 23, 59, tzinfo=UTC)) == "abc-sms-2026-03-01-count"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "rate_limit must be at least 1"),
        (0, "rate_limit must be at least 1"),
        (1, None),
        (1_000_000, None),
        (1_000_001, "rate_limit must be at most 1000000"),
    ],
)
def test_limit_values(value: int, message: str | None) -> None:
    assert limits.check_limit_value("rate_limit", value, 1, limits.MAX_RATE_LIMIT) == message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_its_size_then_refills_at_the_rate() -> None:
    clock = Clock()
    counter = LocalSendCounter(clock)
    refill, size = limits.refill_per_second(60), limits.bucket_size(60)  # 1 a second, 21 at once
    assert [counter.take("b", refill, size, ()) for _ in range(size)] == [ALLOWED] * size
    assert counter.take("b", refill, size, ()) == RATE_LIMITED
    clock.now += 2.5
    assert [counter.take("b", refill, size, ()) for _ in range(3)] == [ALLOWED, ALLOWED, RATE_LIMITED]
    assert counter.take("another bucket", refill, size, ()) == ALLOWED


def test_daily_counts_stop_at_the_limit_and_a_refusal_adds_nothing() -> None:
    clock = Clock()
    counter = LocalSendCounter(clock)
    daily = [("s-sms-day", 3), ("s-international_sms-day", 1)]
    assert counter.take("b", 100.0, 1000, daily) == ALLOWED
    assert counter.take("b", 100.0, 1000, daily) == 2  # the international limit, the second one
    assert counter.take("b", 100.0, 1000, daily[:1]) == ALLOWED
    assert counter.take("b", 100.0, 1000, daily[:1]) == ALLOWED
    assert counter.take("b", 100.0, 1000, daily[:1]) == 1
    clock.now += limits.DAILY_COUNT_TTL_SECONDS + 61
    assert counter.take("b", 100.0, 1000, daily[:1]) == ALLOWED  # the count expired, as Redis's TTL


@pytest.mark.parametrize(
    ("now", "days", "cutoff"),
    [
        # Winter: London is UTC, so midnight is midnight.
        (datetime(2026, 1, 10, 12, 0, tzinfo=UTC), 7, datetime(2026, 1, 3, 0, 0, tzinfo=UTC)),
        # Summer: London midnight is 23:00 UTC the day before.
        (datetime(2026, 7, 15, 12, 0, tzinfo=UTC), 3, datetime(2026, 7, 11, 23, 0, tzinfo=UTC)),
        # 23:30 UTC on 14 July is already 15 July in London.
        (datetime(2026, 7, 14, 23, 30, tzinfo=UTC), 3, datetime(2026, 7, 11, 23, 0, tzinfo=UTC)),
        # Across the clocks going forward (29 March 2026): the cutoff is GMT midnight.
        (datetime(2026, 4, 2, 9, 0, tzinfo=UTC), 7, datetime(2026, 3, 26, 0, 0, tzinfo=UTC)),
    ],
)
def test_retention_cutoff_is_london_midnight(now: datetime, days: int, cutoff: datetime) -> None:
    assert limits.retention_cutoff(now, days) == cutoff


class _OneByOne:
    """The counter's rules, a take at a time, as the docs state them: a token first (none: refused for the
    rate, nothing else changes), then every daily count must have room for one (else refused by the first
    full one, the token staying taken), then each count goes up by one."""

    def __init__(self, size: int) -> None:
        self.tokens, self.at, self.counts = float(size), 0.0, {"s-d": 0, "s-i": 0}

    def take(self, now: float, refill: float, size: int, daily: list[tuple[str, int]]) -> int:
        self.tokens = min(float(size), self.tokens + max(0.0, now - self.at) * refill)
        self.at = now
        if self.tokens < 1:
            return RATE_LIMITED
        self.tokens -= 1
        for index, (key, limit) in enumerate(daily, start=1):
            if self.counts[key] + 1 > limit:
                return index
        for key, _ in daily:
            self.counts[key] += 1
        return ALLOWED


@given(
    st.lists(
        st.tuples(st.sampled_from([(), ("d",), ("d", "i"), ("i",)]), st.floats(min_value=0, max_value=3)),
        min_size=1,
        max_size=80,
    ),
    st.integers(min_value=1, max_value=12),
)
def test_take_many_is_the_same_as_taking_one_after_another(
    takes: list[tuple[tuple[str, ...], float]], size: int
) -> None:
    """Same outcomes as the rules applied one take at a time, whatever the mix of daily counts and however
    time moves between groups: a batch's messages are counted as if sent one by one."""
    limits_of = {"d": 25, "i": 4}
    clock = Clock()
    many, model = LocalSendCounter(clock), _OneByOne(size)
    model.at = clock.now
    group: list[list[tuple[str, int]]] = []
    for keys, wait in takes:
        group.append([(f"s-{k}", limits_of[k]) for k in keys])
        if wait > 1:  # time moves: the group so far is taken at once, then the clock goes on
            assert many.take_many("b", 2.0, size, group) == [model.take(clock.now, 2.0, size, d) for d in group]
            clock.now += wait
            group = []
    assert many.take_many("b", 2.0, size, group) == [model.take(clock.now, 2.0, size, d) for d in group]
    probe = [[("s-d", limits_of["d"]), ("s-i", limits_of["i"])]] * 30
    assert many.take_many("b", 2.0, size, probe) == [model.take(clock.now, 2.0, size, d) for d in probe]
