"""Recipient validation, with Notify's v2 API error messages."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.domain.recipients import (
    InternationalNotAllowed,
    InvalidEmailAddress,
    InvalidPhoneNumber,
    RecipientError,
    is_uk_mobile,
    validate_email_address,
    validate_phone_number,
)


@pytest.mark.parametrize(
    "raw",
    [
        "07700900123",
        "07700 900123",
        "07700 900 123",
        "7700900123",
        "+447700900123",
        "+44 7700 900123",
        "+44 (0)7700 900123",
        "+44 (0) 7700-900-123",
        "447700900123",
        "44 7700 900123",
        "00447700900123",
        "0044 7700 900 123",
        "(07700) 900-123",
        "07700-900-123",
        "07700.900.123",
        "+44.7700.900.123",
        "  07700 900123\n",
        "07700\u00a0900\u200b123",
        "\t+44 7700 900123 ",
        "+07700900123",
        "0+447700900123",
        "0007700900123",
        "+7700900123",
    ],
)
def test_uk_mobiles_in_every_common_form(raw: str) -> None:
    assert validate_phone_number(raw) == "447700900123"
    assert validate_phone_number(raw, allow_international=True) == "447700900123"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("07833333333", "447833333333"),  # research mode: temporary failure
        ("07822222222", "447822222222"),  # research mode: permanent failure
        ("07811111111", "447811111111"),  # research mode: delivered
        ("+447700900000", "447700900000"),  # Notify's smoke-test numbers
        ("+447700900111", "447700900111"),
        ("+447700900222", "447700900222"),
        ("07781 123456", "447781123456"),  # Guernsey: a +44 mobile like any other here
    ],
)
def test_simulated_and_special_numbers(raw: str, normalised: str) -> None:
    assert validate_phone_number(raw) == normalised
    assert is_uk_mobile(normalised)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("020 7946 0000", "Not a UK mobile number"),
        ("+44 20 7946 0000", "Not a UK mobile number"),
        ("01632 960000", "Not a UK mobile number"),
        ("0800 123 4567", "Not a UK mobile number"),
        ("0870900123", "Not a UK mobile number"),
        ("0770090012", "Not enough digits"),
        ("+44 7700 90012", "Not enough digits"),
        ("077009001234", "Too many digits"),
        ("+44 77009001234", "Too many digits"),
        ("", "Not enough digits"),
        ("   ", "Not enough digits"),
        ("+", "Not enough digits"),
        ("12", "Not enough digits"),
        ("07700 90012a", "Must not contain letters or symbols"),
        ("0800-FLOWERS", "Must not contain letters or symbols"),
        ("07700/900123", "Must not contain letters or symbols"),
        ("07700_900123", "Must not contain letters or symbols"),
        ("٠٧٧٠٠٩٠٠١٢٣", "Must not contain letters or symbols"),  # non-ASCII digits
        ("+999 1234 5678", "Not a valid country prefix"),
        ("+33 1 23 45", "Not enough digits"),
        ("+1 650 253 0000 1234 5", "Too many digits"),
        ("+33 6 12 34 56 78 90", "Too many digits"),
        ("+1 212 000 0000", "Number is not valid – double check the phone number you entered"),
        ("+1 900 555 0123", "Number is not valid – double check the phone number you entered"),  # premium
    ],
)
def test_invalid_numbers(raw: str, message: str) -> None:
    for allow_international in (False, True):
        with pytest.raises(InvalidPhoneNumber) as caught:
            validate_phone_number(raw, allow_international=allow_international)
        assert caught.value.message == message
        assert str(caught.value) == message
        assert not isinstance(caught.value, InternationalNotAllowed)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+1 650 253 0000", "16502530000"),
        ("001 (650) 253-0000", "16502530000"),
        ("+33 6 12 34 56 78", "33612345678"),
        ("+49 1512 3456789", "4915123456789"),
        ("+353 85 123 4567", "353851234567"),
        ("+7 912 345 67 89", "79123456789"),
    ],
)
def test_international_numbers_need_permission(raw: str, normalised: str) -> None:
    assert validate_phone_number(raw, allow_international=True) == normalised
    assert not is_uk_mobile(normalised)
    with pytest.raises(InternationalNotAllowed) as caught:
        validate_phone_number(raw)
    assert caught.value.message == "Cannot send to international mobile numbers"
    assert isinstance(caught.value, InvalidPhoneNumber)


def test_uk_mobiles_never_reach_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("phonenumbers called on the UK fast path")

    monkeypatch.setattr(phonenumbers, "parse", refuse)
    assert validate_phone_number("+44 (0)7700 900123") == "447700900123"
    with pytest.raises(InvalidPhoneNumber):
        validate_phone_number("020 7946 0000")


@pytest.mark.parametrize(
    ("normalised", "expected"),
    [
        ("447700900123", True),
        ("442079460000", False),
        ("44770090012", False),
        ("16502530000", False),
        ("07700900123", False),
        ("44770090012x", False),
    ],
)
def test_is_uk_mobile(normalised: str, expected: bool) -> None:
    assert is_uk_mobile(normalised) is expected


@settings(max_examples=200, deadline=None)
@given(raw=st.text(alphabet=st.sampled_from(list("0123456789 +()-.4470x\u00a0٣")), max_size=24) | st.text(max_size=24))
def test_phone_validation_raises_nothing_but_recipient_errors(raw: str) -> None:
    for allow_international in (False, True):
        try:
            normalised = validate_phone_number(raw, allow_international=allow_international)
        except RecipientError:
            continue
        assert normalised.isdigit() and normalised.isascii()
        assert validate_phone_number(normalised, allow_international=True) == normalised


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("delivered@simulator.notify", "delivered@simulator.notify"),
        ("perm-fail@simulator.notify", "perm-fail@simulator.notify"),
        ("temp-fail@simulator.notify", "temp-fail@simulator.notify"),
        (
            "simulate-delivered@notifications.service.gov.uk",
            "simulate-delivered@notifications.service.gov.uk",
        ),
        ("  Jo.Bloggs@Example.COM \n", "Jo.Bloggs@Example.COM"),
        ("\u200bjo@example.com\u00a0", "jo@example.com"),
        ("firstname-o'surname@domain.com", "firstname-o'surname@domain.com"),
        ("a+tag@sub.domain.example.co.uk", "a+tag@sub.domain.example.co.uk"),
        ("!#$%&'*+/=?^_`{|}~-@example.com", "!#$%&'*+/=?^_`{|}~-@example.com"),
        ("jo@例え.テスト", "jo@例え.テスト"),
        ("jo@xn--r8jz45g.xn--zckzah", "jo@xn--r8jz45g.xn--zckzah"),
        ("jo@my--hyphen.example", "jo@my--hyphen.example"),
    ],
)
def test_valid_email_addresses(raw: str, normalised: str) -> None:
    assert validate_email_address(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "jo",
        "jo@",
        "@example.com",
        "jo@example",
        "jo@@example.com",
        "jo bloggs@example.com",
        "jo@exam ple.com",
        '"jo"@example.com',
        "jo;x@example.com",
        "jo..bloggs@example.com",
        "jo@example..com",
        "jo@.example.com",
        "jo@example.com.",
        "jo@-example.com",
        "jo@example-.com",
        "jo@example.c",
        "jo@example.123",
        "jo@example.co_uk",
        "jo@" + "a" * 64 + ".com",
        "a" * 310 + "@example.com",
        "jo@" + ".".join(["abcdefghij"] * 24) + ".com",
        "jo@exam\u200bple.com\u0000",
    ],
)
def test_invalid_email_addresses(raw: str) -> None:
    with pytest.raises(InvalidEmailAddress) as caught:
        validate_email_address(raw)
    assert caught.value.message == "Not a valid email address"
    assert isinstance(caught.value, RecipientError)
