"""The rules of herald/domain/senders.py: SMS senders, reply-to addresses, inbound numbers, one-click
unsubscribe links, scheduled times, one default of each kind and an inbound number's fixed text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.domain import senders

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Herald", "Herald"),
        ("  GOV UK  ", "GOV UK"),
        ("ABC", "ABC"),
        ("Council2026", "Council2026"),  # 11 characters
        ("07700900123", "07700900123"),
        ("+447700900123", "+447700900123"),
        ("60006", "60006"),  # a short code
    ],
)
def test_good_sms_senders_are_kept_trimmed(raw: str, stored: str) -> None:
    assert senders.sms_sender(raw) == stored


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "sms_sender Can't be empty"),
        ("   ", "sms_sender Can't be empty"),
        ("AB", "sms_sender must be at least 3 characters"),
        ("Council 2026", "sms_sender cannot be longer than 11 characters"),
        ("Hi!", "sms_sender can only use letters, numbers and spaces, or be a phone number"),
        ("Café", "sms_sender can only use letters, numbers and spaces, or be a phone number"),
        ("00447700900123", "sms_sender cannot start with 00"),
        ("1234", "sms_sender as a number must have 5 to 15 digits"),
        ("+1234567890123456", "sms_sender as a number must have 5 to 15 digits"),
        ("Her\x00ald", "sms_sender must not contain NUL characters"),
    ],
)
def test_bad_sms_senders_are_refused_naming_the_field(raw: str, message: str) -> None:
    with pytest.raises(senders.SenderError) as caught:
        senders.sms_sender(raw)
    assert caught.value.field == "sms_sender"
    if "NUL" not in message:  # that one's wording is inputs.check_text's
        assert caught.value.message == message


def test_reply_to_addresses_are_validated_as_recipients_are() -> None:
    assert senders.reply_to_address(" replies@example.gov.uk ") == "replies@example.gov.uk"
    with pytest.raises(senders.SenderError) as caught:
        senders.reply_to_address("not an address")
    assert (caught.value.field, caught.value.message) == ("email_address", "email_address Not a valid email address")


@pytest.mark.parametrize("written", ["07700 900123", "+44 7700 900123", "447700900123", "07700-900-123"])
def test_an_inbound_number_is_stored_in_one_form_however_it_is_written(written: str) -> None:
    assert senders.inbound_number(written) == "447700900123"


def test_an_inbound_number_must_be_a_phone_number() -> None:
    with pytest.raises(senders.SenderError) as caught:
        senders.inbound_number("not a number")
    assert caught.value.field == "number"
    assert caught.value.message.startswith("number ")


def test_a_one_click_unsubscribe_url_must_be_https() -> None:
    url = "https://example.gov.uk/unsubscribe?token=abc"
    assert senders.unsubscribe_url(url) == url
    with pytest.raises(senders.SenderError) as caught:
        senders.unsubscribe_url("http://example.gov.uk/unsubscribe")
    assert caught.value.message == "one_click_unsubscribe_url is not a valid https url"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.gov.uk/a b", "must not contain whitespace"),
        ("https://example.gov.uk/\r\nBcc: x@example.com", "must not contain whitespace"),  # no header injection
        ("https://example.gov.uk/" + "a" * 2000, "is too long"),
    ],
)
def test_an_unsubscribe_url_that_cannot_travel_as_a_header_is_refused(url: str, problem: str) -> None:
    with pytest.raises(senders.SenderError) as caught:
        senders.unsubscribe_url(url)
    assert caught.value.field == "one_click_unsubscribe_url"
    assert problem in caught.value.message


def test_a_scheduled_time_is_in_the_next_24_hours() -> None:
    assert senders.scheduled_for(NOW + timedelta(minutes=1), NOW) == NOW + timedelta(minutes=1)
    assert senders.scheduled_for(NOW + timedelta(hours=24), NOW) == NOW + timedelta(hours=24)
    with pytest.raises(senders.SenderError) as past:
        senders.scheduled_for(NOW - timedelta(seconds=1), NOW)
    assert (past.value.field, past.value.message) == ("scheduled_for", "scheduled_for datetime can not be in the past")
    with pytest.raises(senders.SenderError) as far:
        senders.scheduled_for(NOW + timedelta(hours=24, seconds=1), NOW)
    assert far.value.message == "scheduled_for datetime can only be 24 hours in the future"


@pytest.mark.parametrize(
    ("is_default", "currently_default"), [(None, True), (True, True), (None, False), (False, False)]
)
def test_a_default_may_be_kept_or_made_and_another_sender_unset(
    is_default: bool | None, currently_default: bool
) -> None:
    senders.keep_one_default(senders.SMS_SENDER, is_default, currently_default)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (senders.SMS_SENDER, "You must have at least one SMS sender as the default: make another the default"),
        (
            senders.REPLY_TO,
            "You must have at least one reply to email address as the default: make another the default",
        ),
    ],
)
def test_the_default_is_never_unset_only_replaced(kind: str, message: str) -> None:
    with pytest.raises(senders.SenderError) as caught:
        senders.keep_one_default(kind, False, currently_default=True)
    assert (caught.value.field, caught.value.message) == ("is_default", message)


def test_an_inbound_numbers_sender_keeps_its_text() -> None:
    senders.keep_inbound_number("447700900123", None, is_inbound_number=True)
    senders.keep_inbound_number("447700900123", "447700900123", is_inbound_number=True)
    senders.keep_inbound_number("Council", "Parking", is_inbound_number=False)
    with pytest.raises(senders.SenderError) as caught:
        senders.keep_inbound_number("447700900123", "Council", is_inbound_number=True)
    assert (caught.value.field, caught.value.message) == ("sms_sender", "You cannot update an inbound number")
