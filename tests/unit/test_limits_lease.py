"""The leases one process holds of Redis's buckets and daily counts: served locally, chunks following demand,
tokens lost and daily units given back when a lease ends, nothing used by a refused or failed send."""

from __future__ import annotations

from herald.limits import ALLOWED, RATE_LIMITED
from herald.limits.lease import LeaseBook, Request

KEYS = ["s-tokens-normal", "s-sms-day"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _request(book: LeaseBook, keys: list[str] = KEYS) -> Request:
    planned = book.reserve(keys)
    assert isinstance(planned, Request)
    return planned


def _lease(book: LeaseBook, chunks: list[int]) -> None:
    """Asks Redis once per chunk size, granting all of it, and uses up every lease but the last."""
    for i, chunk in enumerate(chunks):
        request = _request(book)
        assert request.wants == [chunk, chunk]
        book.settle(request, ALLOWED, [chunk, chunk])
        if i < len(chunks) - 1:
            assert [book.reserve(KEYS) for _ in range(chunk - 1)] == [None] * (chunk - 1)


def test_a_lease_serves_sends_without_redis_and_the_chunk_doubles_while_leases_run_out() -> None:
    book = LeaseBook(Clock(), max_chunk=8)
    _lease(book, [1, 2, 4, 8])  # a new key asks for one: a quiet service takes one at a time
    assert [book.reserve(KEYS) for _ in range(7)] == [None] * 7  # the last grant's other units
    assert _request(book).wants == [8, 8]  # never past max_chunk


def test_redis_may_grant_less_than_asked() -> None:
    book = LeaseBook(Clock())
    _lease(book, [1])
    request = _request(book)
    assert request.wants == [2, 2]
    book.settle(request, ALLOWED, [1, 2])  # near the bucket's end: one token, this send's
    planned = _request(book)
    assert planned.wants == [4, 0]  # a daily unit held, reserved; the bucket asked again


def test_an_ended_lease_loses_its_tokens_and_gives_back_its_daily_units() -> None:
    clock = Clock()
    book = LeaseBook(clock, seconds=1.0)
    _lease(book, [1, 2, 4])  # three of the four left
    assert book.reserve(KEYS) is None
    clock.now += 1.0
    request = _request(book)
    assert request.wants == [2, 2]  # what the ended lease saw used: its requester and one more
    assert book.give_backs() == [("s-sms-day", 2)]  # the tokens are simply gone
    assert book.give_backs() == []


def test_idle_leases_are_dropped_by_the_sweep() -> None:
    clock = Clock()
    book = LeaseBook(clock, seconds=1.0)
    _lease(book, [1, 2, 4])
    clock.now += 1.5
    assert book.reserve(["other-tokens"]) is not None  # any take sweeps
    assert book.give_backs() == [("s-sms-day", 3)]


def test_a_rate_limited_send_uses_no_daily_unit_and_a_daily_refusal_keeps_its_token() -> None:
    book = LeaseBook(Clock())
    _lease(book, [1, 2])
    assert book.reserve(KEYS) is None  # both leases now empty
    partial = _request(book, KEYS)
    book.settle(partial, ALLOWED, [1, 4])  # 3 daily units held, no token
    rate_limited = _request(book)
    assert rate_limited.wants == [8, 0]
    book.settle(rate_limited, RATE_LIMITED, [0, 0])
    assert book.release() == [("s-sms-day", 3)]  # the reserved unit was put back

    book = LeaseBook(Clock())
    _lease(book, [1])
    daily_only = _request(book, KEYS)
    book.settle(daily_only, ALLOWED, [4, 1])  # 3 tokens held, no daily unit
    daily_refused = _request(book)
    assert daily_refused.wants == [0, 4]
    book.settle(daily_refused, 1, [0, 0])
    assert [book.reserve(["s-tokens-normal"]) for _ in range(2)] == [None, None]
    assert isinstance(book.reserve(["s-tokens-normal"]), Request)  # the refused send's token stayed used


def test_a_failed_round_trip_puts_back_every_reserved_unit() -> None:
    book = LeaseBook(Clock())
    _lease(book, [1, 2])
    request = _request(book, [*KEYS, "s-international_sms-day"])
    assert request.wants == [0, 0, 1]
    book.settle(request, None, [0, 0, 0])
    assert book.reserve(KEYS) is None  # the token and the daily unit are held again
    assert book.release() == []


def test_takes_wait_for_a_chunk_on_its_way_rather_than_each_asking_redis() -> None:
    book = LeaseBook(Clock())
    _lease(book, [1])
    first = _request(book)
    assert first.wants == [2, 2] and first.landed is not None
    waiting = book.reserve(KEYS)
    assert waiting is first.landed and not waiting.is_set()
    book.settle(first, ALLOWED, [2, 2])
    assert waiting.is_set()
    assert book.reserve(KEYS) is None


def test_one_at_a_time_takes_do_not_wait_for_each_other() -> None:
    book = LeaseBook(Clock())
    first = _request(book)
    assert first.wants == [1, 1] and first.landed is None
    assert isinstance(book.reserve(KEYS), Request)  # exact takes go to Redis side by side, as without leases


def test_release_gives_back_every_daily_unit_held_or_waiting() -> None:
    clock = Clock()
    book = LeaseBook(clock, seconds=1.0)
    _lease(book, [1, 2])
    clock.now += 2.0
    _request(book, ["s-tokens-normal", "s-email-day"])  # the sms lease ends: one unit waits to go back
    book.settle(_request(book, ["s-tokens-team", "s-email-day"]), ALLOWED, [1, 1])
    assert sorted(book.release()) == [("s-sms-day", 1)]
    assert book.release() == []
