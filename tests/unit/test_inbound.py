"""Received text messages: the rules of what a provider's inbound message holds (herald/domain/inbound.py), and
MMG's encoding of a text as the gateway decodes it and the simulator writes it (Notify's format_mmg_message)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald.domain import inbound
from herald.providers._sim_inbound import firetext_inbound, mmg_inbound, mmg_message
from services.gateway.webhooks import mmg_text


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("447700900123", "447700900123"),  # MMG's and Firetext's form
        ("07700900123", "447700900123"),  # Notify's stored form
        ("+44 7700 900123", "447700900123"),
        (" 07700-900-123 ", "447700900123"),
        ("+1 202 555 0100", "12025550100"),  # a sender abroad
        ("60604", "60604"),  # a short code is not a valid number: kept as written
        ("not a number", "not a number"),
    ],
)
def test_numbers_are_compared_in_one_form_whichever_way_they_were_written(raw: str, stored: str) -> None:
    assert inbound.phone_number(raw, "user_number") == stored


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "notify_number is required"),
        ("   ", "notify_number is required"),
        ("0770\x00900123", "notify_number"),  # PostgreSQL cannot store a NUL
        ("1" * 33, "notify_number"),
    ],
)
def test_a_number_that_cannot_be_stored_is_refused_naming_its_field(raw: str, message: str) -> None:
    with pytest.raises(inbound.InboundError) as err:
        inbound.phone_number(raw, "notify_number")
    assert err.value.field == "notify_number"
    assert message in err.value.message


def test_provider_dates_are_london_wall_clock_time() -> None:
    summer = inbound.provider_date("2017-05-21 11:56:11")
    winter = inbound.provider_date("2017-01-21 11:56:11")
    assert summer is not None and summer.astimezone(UTC) == datetime(2017, 5, 21, 10, 56, 11, tzinfo=UTC)
    assert winter is not None and winter.astimezone(UTC) == datetime(2017, 1, 21, 11, 56, 11, tzinfo=UTC)
    assert inbound.provider_date("2017-05-21T11:56:11") == summer
    assert inbound.provider_date("") is None  # MMG's DateRecieved is optional


@pytest.mark.parametrize("raw", ["yesterday", "2017-13-01 00:00:00", "21/05/2017 11:56", "2017-05-21\x00"])
def test_a_date_that_is_not_one_is_refused(raw: str) -> None:
    with pytest.raises(inbound.InboundError) as err:
        inbound.provider_date(raw)
    assert err.value.field == "provider_date"


def test_content_may_be_empty_but_not_longer_than_any_phone_can_send() -> None:
    assert inbound.content("") == ""
    longest = "x" * inbound.MAX_CONTENT_LENGTH
    assert inbound.content(longest) == longest
    with pytest.raises(inbound.InboundError) as err:
        inbound.content(longest + "x")
    assert err.value.field == "content"
    with pytest.raises(inbound.InboundError):
        inbound.content("lone \ud800 surrogate")


def test_mmg_messages_decode_as_notify_decodes_them() -> None:
    # Notify's own examples (app/notifications/receive_notifications.py and its tests).
    assert mmg_text("some+uri+encoded+message%3A") == "some uri encoded message:"
    assert mmg_text("2017-05-21+11%3A56%3A11") == "2017-05-21 11:56:11"
    assert mmg_text("%F0%9F%98%80") == "😀"
    assert mmg_text("\\U0001f600+and+caf\\xe9") == "😀 and café"


def test_an_mmg_message_whose_escapes_do_not_decode_is_kept_as_written() -> None:
    assert mmg_text("ends+with+a+backslash+%5C") == "ends with a backslash \\"


@pytest.mark.parametrize(
    "text",
    ["Hello", "", "50% off + free", "café 😀 ünïcode", 'a \\n is not a newline, "quoted"', "line\nbreak"],
)
def test_the_simulator_writes_texts_that_the_gateway_reads_back_exactly(text: str) -> None:
    assert mmg_text(mmg_message(text)) == text


def test_the_simulator_writes_each_provider_s_fields() -> None:
    at = datetime(2026, 7, 1, 9, 30, tzinfo=UTC)
    mmg = mmg_inbound("447700900000", "447700900123", "Hi there", at)
    assert (mmg["Number"], mmg["MSISDN"], mmg["Message"]) == ("447700900000", "447700900123", "Hi+there")
    assert mmg["DateRecieved"] == "2026-07-01+10%3A30%3A00"  # London summer time, URL-encoded
    assert mmg["ID"]
    firetext = firetext_inbound("447700900000", "447700900123", "Hi there", at)
    assert firetext == {
        "source": "447700900123",
        "destination": "447700900000",
        "message": "Hi there",
        "time": "2026-07-01 10:30:00",
    }
