"""ProviderRotation: weighted choice, failover, and switching on error ratio and latency, on an injected clock."""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter

import orjson
import pytest

from herald.logs import JsonFormatter
from herald.providers.rotation import ProviderRotation, parse_weights


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Switches:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, str]] = []

    def __call__(self, name: str, in_rotation: bool, reason: str) -> None:
        self.seen.append((name, in_rotation, reason))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def switches() -> Switches:
    return Switches()


def rotation(
    clock: Clock, switches: Switches, weights: dict[str, int] | None = None, **kwargs: float
) -> ProviderRotation:
    settings: dict[str, float] = {
        "window_seconds": 60.0,
        "error_ratio_threshold": 0.5,
        "latency_threshold_seconds": 5.0,
        "cooldown_seconds": 60.0,
        "min_samples": 4,
    }
    settings.update(kwargs)
    return ProviderRotation(
        weights or {"mmg": 50, "firetext": 50},
        window_seconds=settings["window_seconds"],
        error_ratio_threshold=settings["error_ratio_threshold"],
        latency_threshold_seconds=settings["latency_threshold_seconds"],
        cooldown_seconds=settings["cooldown_seconds"],
        min_samples=int(settings["min_samples"]),
        clock=clock,
        on_switch=switches,
        rng=random.Random(7),
    )


def fail(r: ProviderRotation, name: str, times: int, seconds: float = 0.1) -> None:
    for _ in range(times):
        r.record(name, False, seconds)


def succeed(r: ProviderRotation, name: str, times: int, seconds: float = 0.1) -> None:
    for _ in range(times):
        r.record(name, True, seconds)


def test_parse_weights() -> None:
    assert parse_weights("mmg=50,firetext=50") == {"mmg": 50, "firetext": 50}
    assert parse_weights(" mmg = 100 , firetext=0 ,") == {"mmg": 100, "firetext": 0}
    for bad in ("mmg", "mmg=x", "=5", "mmg=1,mmg=2"):
        with pytest.raises(ValueError):
            parse_weights(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"names_and_weights": {}},
        {"names_and_weights": {"mmg": -1}},
        {"names_and_weights": {"mmg": 1}, "window_seconds": 0},
        {"names_and_weights": {"mmg": 1}, "error_ratio_threshold": 0},
        {"names_and_weights": {"mmg": 1}, "min_samples": 0},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ProviderRotation(**kwargs)  # type: ignore[arg-type]


def test_choice_follows_the_weights(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches, {"mmg": 75, "firetext": 25})
    counts = Counter(r.choose() for _ in range(4000))
    assert 0.70 < counts["mmg"] / 4000 < 0.80
    assert counts["mmg"] + counts["firetext"] == 4000


def test_retry_goes_to_the_other_provider(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches, {"mmg": 99, "firetext": 1})
    assert {r.choose(exclude="mmg") for _ in range(100)} == {"firetext"}
    assert {r.choose(exclude="firetext") for _ in range(100)} == {"mmg"}


def test_excluding_the_only_provider_still_chooses_it(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches, {"mmg": 1})
    assert r.choose(exclude="mmg") == "mmg"


def test_weight_zero_is_a_standby(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches, {"mmg": 100, "firetext": 0})
    assert {r.choose() for _ in range(200)} == {"mmg"}
    assert r.choose(exclude="mmg") == "firetext"
    fail(r, "mmg", 4)
    assert {r.choose() for _ in range(20)} == {"firetext"}


def test_error_ratio_takes_a_provider_out_and_the_cooldown_brings_it_back(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches)
    succeed(r, "mmg", 2)
    fail(r, "mmg", 1)
    assert r.in_rotation() == ["mmg", "firetext"]  # 1 of 3: below the sample minimum anyway
    fail(r, "mmg", 1)  # 2 of 4 = 0.5

    assert switches.seen == [("mmg", False, "error_ratio")]
    assert r.in_rotation() == ["firetext"]
    assert {r.choose() for _ in range(100)} == {"firetext"}
    # A retry of a firetext failure still avoids the provider that is cooling down.
    assert r.choose(exclude="firetext") == "firetext"

    clock.now += 59.9
    assert r.in_rotation() == ["firetext"]
    clock.now += 0.1
    assert r.in_rotation() == ["mmg", "firetext"]
    assert switches.seen == [("mmg", False, "error_ratio"), ("mmg", True, "cooldown_over")]
    assert {r.choose() for _ in range(200)} == {"mmg", "firetext"}


def test_provider_comes_back_with_a_clean_record(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches)
    fail(r, "mmg", 4)
    fail(r, "mmg", 10)  # in flight when it left: not counted
    clock.now += 60
    fail(r, "mmg", 3)
    assert r.in_rotation() == ["mmg", "firetext"]
    fail(r, "mmg", 1)
    assert r.in_rotation() == ["firetext"]
    assert [s for s in switches.seen if not s[1]] == [("mmg", False, "error_ratio")] * 2


def test_slow_answers_take_a_provider_out(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches)
    succeed(r, "firetext", 3, seconds=6.0)
    succeed(r, "firetext", 1, seconds=2.0)  # mean 5.0
    assert switches.seen == [("firetext", False, "latency")]
    assert r.in_rotation() == ["mmg"]


def test_a_healthy_provider_stays(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches)
    for _ in range(50):
        succeed(r, "mmg", 3, seconds=1.0)
        fail(r, "mmg", 1)  # 25% errors
    assert switches.seen == []


def test_old_samples_leave_the_window(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches)
    fail(r, "mmg", 3)
    clock.now += 60
    succeed(r, "mmg", 4)
    fail(r, "mmg", 1)  # 1 of 5 within the window
    assert switches.seen == []


def test_a_busy_window_is_held_in_buckets_not_hand_off_by_hand_off(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches, error_ratio_threshold=1.0)
    for _ in range(1200):  # 2 minutes at 100 hand-offs a second
        succeed(r, "mmg", 5)
        fail(r, "mmg", 5)
        clock.now += 0.1
    provider = r._providers["mmg"]
    # The last 60 s's hand-offs, give or take one bucket's second, in about 60 buckets.
    assert 5990 <= provider.count <= 6100
    assert provider.errors * 2 == provider.count
    assert len(provider.buckets) <= 61
    assert switches.seen == []


def test_the_last_provider_never_leaves(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches)
    fail(r, "mmg", 4)
    clock.now += 30
    fail(r, "firetext", 20)
    assert switches.seen == [("mmg", False, "error_ratio")]
    assert r.in_rotation() == ["firetext"]
    assert r.choose() == "firetext"

    # Once mmg is back, firetext's still-bad record takes it out at its next hand-off.
    clock.now += 30
    fail(r, "firetext", 1)
    assert r.in_rotation() == ["mmg"]
    assert switches.seen[-2:] == [("mmg", True, "cooldown_over"), ("firetext", False, "error_ratio")]


def test_single_provider_is_never_taken_out(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches, {"ses": 1})
    fail(r, "ses", 50, seconds=30.0)
    assert r.choose() == "ses"
    assert switches.seen == []


def test_unknown_provider_is_an_error(clock: Clock, switches: Switches) -> None:
    with pytest.raises(KeyError):
        rotation(clock, switches).record("nope", True, 0.1)


def test_each_switch_logs_one_json_line_without_personal_data(
    clock: Clock, switches: Switches, caplog: pytest.LogCaptureFixture
) -> None:
    r = rotation(clock, switches)
    with caplog.at_level(logging.INFO, logger="herald.providers.rotation"):
        fail(r, "mmg", 4)
        clock.now += 60
        r.choose()

    records = [rec for rec in caplog.records if rec.name == "herald.providers.rotation"]
    assert len(records) == 2
    out, back = (orjson.loads(JsonFormatter("dispatcher").format(rec)) for rec in records)
    assert out["logger"] == "herald.providers.rotation"
    assert (out["provider"], out["in_rotation"], out["reason"]) == ("mmg", False, "error_ratio")
    assert out["error_ratio"] == 1.0
    assert out["samples"] == 4
    assert (back["provider"], back["in_rotation"], back["reason"]) == ("mmg", True, "cooldown_over")


def test_callback_may_call_back_in(clock: Clock) -> None:
    seen: list[list[str]] = []
    r: ProviderRotation

    def on_switch(name: str, in_rotation: bool, reason: str) -> None:
        seen.append(r.in_rotation())

    r = ProviderRotation({"mmg": 1, "firetext": 1}, min_samples=1, clock=clock, on_switch=on_switch)
    r.record("mmg", False, 0.1)
    assert seen == [["firetext"]]


def test_concurrent_use_is_consistent(clock: Clock, switches: Switches) -> None:
    r = rotation(clock, switches, min_samples=1000, error_ratio_threshold=1.0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2000):
                name = r.choose()
                r.record(name, True, 0.01)
                r.choose(exclude=name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert switches.seen == []
    assert r.in_rotation() == ["mmg", "firetext"]
