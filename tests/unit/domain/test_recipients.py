"""Recipient validation, with Notify's v2 API error messages."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from herald.domain import recipients
from herald.domain.recipients import (
    UK_PREFIX,
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
        ("07781 123456", "447781123456"),  # Guernsey: a +44 mobile, no international permission needed
        ("07797 123456", "447797123456"),  # Jersey
        ("07000 123456", "447000123456"),  # a UK personal number is not a landline: Notify sends to it
    ],
)
def test_simulated_and_special_numbers(raw: str, normalised: str) -> None:
    assert validate_phone_number(raw) == normalised
    assert is_uk_mobile(normalised)


INVALID = "Number is not valid – double check the phone number you entered"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # Characters first: anything but digits, whitespace, brackets, dashes and plus.
        ("07700 90012a", "Must not contain letters or symbols"),
        ("0800-FLOWERS", "Must not contain letters or symbols"),
        ("07700/900123", "Must not contain letters or symbols"),
        ("07700_900123", "Must not contain letters or symbols"),
        ("٠٧٧٠٠٩٠٠١٢٣", "Must not contain letters or symbols"),  # non-ASCII digits
        ("07700\x00900123", "Must not contain letters or symbols"),
        ("07700\x1c900123", "Must not contain letters or symbols"),
        # Then an empty number, then anything phonenumbers cannot parse.
        ("", "Not enough digits"),
        ("+", "Not enough digits"),  # after the "+" is dropped for a second try it is empty
        ("   ", INVALID),
        ("07", INVALID),
        ("+999 123 456", INVALID),  # no such country code, and not a UK number either
        ("+1 212 000 0000", INVALID),
        ("+1 900 555 0123", INVALID),  # premium rate
        ("+33 1 23 45", INVALID),
        # Then phonenumbers' too_short and too_long.
        ("0999", "Not enough digits"),
        ("12", "Not enough digits"),
        ("+44 77009001234", "Too many digits"),
        ("0044 0044 7700 900123", "Too many digits"),
        ("+999 1234 5678", "Too many digits"),  # retried as "999 1234 5678": an 11-digit UK number
        ("1234567890123456", "Too many digits"),
        ("+1 650 253 0000 1234 5", "Too many digits"),
        ("+33 6 12 34 56 78 90", "Too many digits"),
        # Then whether it is a valid number of a type Notify sends to.
        ("0770090012", INVALID),  # possible length, but not a valid number
        ("+44 7700 90012", INVALID),
        ("01632 960000", INVALID),  # Ofcom's drama range for landlines is not a real number
        ("0800 123 4567", INVALID),  # freephone
        ("0870 900 1234", INVALID),  # shared cost
        ("0560 123 4567", INVALID),  # VoIP
        # Then the service's permissions: UK landlines (Jersey and Guernsey ones too) are not mobiles.
        ("020 7946 0000", "Not a UK mobile number"),
        ("+44 20 7946 0000", "Not a UK mobile number"),
        ("01534 456789", "Not a UK mobile number"),  # Jersey
        ("01481 256789", "Not a UK mobile number"),  # Guernsey
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
        ("07723–456—789", "447723456789"),  # en dash and em dash
        ("07723‐456‑789", "447723456789"),  # hyphen and non-breaking hyphen
        ("07723−456789", "447723456789"),  # minus sign
        ("07723\u00a0456\u00a0789", "447723456789"),  # no-break space
        ("07723\u202f456\u202f789", "447723456789"),  # narrow no-break space
        ("07723\u2009456\u3000789", "447723456789"),  # thin and ideographic spaces
        ("+44\u00a0(0)\u00a07723–456789", "447723456789"),
        ("\u200b07723\u200c456\u2060789\ufeff", "447723456789"),  # zero-width characters
        ("+33 6 12–34–56–78", "33612345678"),
    ],
)
def test_unicode_dashes_and_spaces_are_normalised_first(raw: str, normalised: str) -> None:
    assert validate_phone_number(raw, allow_international=True) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "07700\x0b900123",  # vertical tab
        "07700\x0c900123",  # form feed
        "07700\t900123",
        "07700\n900123",
        "07700\r900123",
    ],
)
def test_control_characters_inside_a_number_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        validate_phone_number(raw, allow_international=True)
    assert caught.value.message == INVALID


@pytest.mark.parametrize("raw", ["\x0b07700900123\x0c", "\t07700 900123\r\n"])
def test_whitespace_around_a_number_is_ignored(raw: str) -> None:
    assert validate_phone_number(raw) == "447700900123"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("07640 123456", None),  # pagers: 076 ...
        ("07623 123456", None),
        ("07693 123456", None),
        ("+44 7646 412345", None),
        ("07624 123456", "447624123456"),  # ... except 07624, the Isle of Man's mobiles
        ("07624 456789", "447624456789"),
    ],
)
def test_uk_pager_numbers_are_refused(raw: str, normalised: str | None) -> None:
    if normalised is not None:
        assert validate_phone_number(raw) == normalised
        return
    with pytest.raises(InvalidPhoneNumber) as caught:
        validate_phone_number(raw, allow_international=True)
    assert caught.value.message == INVALID


@pytest.mark.parametrize(
    "raw",
    [
        "+290 5 1234",  # St Helena
        "+247 6 1234",  # Ascension
        "+850 191 123 4567",  # North Korea
        "+870 7 7312 3456",  # Inmarsat
        "+881 6 1234 5678",  # satellite
    ],
)
def test_countries_outside_the_billing_list_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        validate_phone_number(raw, allow_international=True)
    assert caught.value.message == "Not a valid country prefix"
    # A service that may not text abroad hears that first, as from Notify's API.
    with pytest.raises(InternationalNotAllowed):
        validate_phone_number(raw)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+1 650 253 0000", "16502530000"),
        ("001 (650) 253-0000", "16502530000"),
        ("+33 6 12 34 56 78", "33612345678"),
        ("+49 1512 3456789", "4915123456789"),
        ("+353 85 123 4567", "353851234567"),
        ("+7 912 345 67 89", "79123456789"),
        ("33 6 12 34 56 78", "33612345678"),  # a "+" lost in a spreadsheet
        ("+1 242 359 1234", "12423591234"),  # Bahamas: its own entry in the billing list
        ("077009001234", "77009001234"),  # too long for the UK, so read as +7 700...: Notify does the same
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
    for raw in ("+44 (0)7700 900123", "07700 900123", "447700900123", "0044 7624 123456", "7797123456"):
        assert validate_phone_number(raw).startswith("447")


def _full_path(raw: str) -> str | None:
    try:
        number = recipients._parse_leniently(raw.translate(recipients._TYPOGRAPHY))
        recipients._check_sendable(number, allow_international=True)
    except RecipientError:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def test_the_uk_shortcut_agrees_with_the_full_path_for_every_mobile_range() -> None:
    # Every 07xxxx range, written three ways: the shortcut must accept exactly what the full path accepts.
    for block in range(70000, 80000):
        for raw in (f"0{block}0000", f"+44 {block} 5555", f"44{block}9999"):
            shortcut = recipients._fast_uk_mobile(raw)
            full = _full_path(raw)
            assert (None if shortcut is None else UK_PREFIX + shortcut) == (
                full if full and full[:3] == "447" else None
            )


@settings(max_examples=500, deadline=None)
@given(raw=st.text(alphabet=st.sampled_from(list("0123456789 +()-44077\t")), max_size=20))
def test_the_uk_shortcut_never_accepts_what_the_full_path_refuses(raw: str) -> None:
    shortcut = recipients._fast_uk_mobile(raw)
    if shortcut is not None:
        assert _full_path(raw) == UK_PREFIX + shortcut


# Numbers as people write them: any country code or none, the national 0 or "(0)" or none, separators,
# typographic dashes and spaces, surrounding whitespace; the national part random, so that most are
# not mobiles and many not valid.
_WRITTEN_NUMBERS = st.from_regex(
    r"[ \t]{0,2}(\+44|44|0044|\+|0\+44|\+0)?[ ()\-.]{0,2}(\(0\)|0)?[ ()\-\u2013\u00a0]{0,2}"
    r"7[0-9]{3}[ .\-]?[0-9]{3}[ \-\u200b]?[0-9]{1,5}[ \n]{0,2}",
    fullmatch=True,
)


@settings(max_examples=1000, deadline=None)
@given(raw=_WRITTEN_NUMBERS | st.text(alphabet=st.sampled_from(list("0123456789 +()-.44077\t\u00a0")), max_size=20))
def test_validation_agrees_with_the_full_phonenumbers_path(raw: str) -> None:
    # The UK shortcut must give what phonenumbers gives, or leave the number to it.
    try:
        normalised: str | None = validate_phone_number(raw, allow_international=True)
    except RecipientError:
        normalised = None
    assert normalised == _full_path(raw)


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
        ("\u2028jo@example.com\u2029", "jo@example.com"),  # line and paragraph separators
        ("\u2029\u2028 jo@example.com \u2028\n", "jo@example.com"),
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
        "jo@exam\u2028ple.com",  # only stripped from the ends
    ],
)
def test_invalid_email_addresses(raw: str) -> None:
    with pytest.raises(InvalidEmailAddress) as caught:
        validate_email_address(raw)
    assert caught.value.message == "Not a valid email address"
    assert isinstance(caught.value, RecipientError)


def _address_the_long_way(raw: str) -> str | None:
    """validate_email_address without its ASCII shortcuts: every address translated, every hostname through
    the IDNA codec. None: refused."""
    address = raw.translate(recipients._OBSCURE_WHITESPACE).strip(recipients._SURROUNDING_WHITESPACE)
    match = recipients._EMAIL.fullmatch(address)
    if not match or len(address) > 320 or ".." in address:
        return None
    try:
        hostname = match.group(1).encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = hostname.split(".")
    if len(hostname) > 253 or len(labels) < 2:
        return None
    if not all(label and len(label) <= 63 and recipients._HOSTNAME_LABEL.fullmatch(label) for label in labels):
        return None
    return address if recipients._TLD.fullmatch(labels[-1]) else None


_EMAIL_PIECES = st.sampled_from(["a", "Z", "9", ".", "-", "--", "xn--", "@", "_", "+", " ", "\t", "é", "\u200b", "co"])


@settings(max_examples=3000)
@given(
    st.one_of(
        st.lists(_EMAIL_PIECES, max_size=24).map("".join),
        st.builds(
            lambda local, labels: f"{local}@{'.'.join(labels)}",
            st.text("abc.+_-", min_size=1, max_size=8),
            st.lists(
                st.one_of(st.text("ab0-", max_size=70), st.sampled_from(["xn--bcher-kva", "com", "uk"])), max_size=4
            ),
        ),
    )
)
@example("person@example.com")
@example("Person.Name+tag@sub.example.co.uk")
@example("a@xn--bcher-kva.com")
@example("a@bücher.com")
@example(" a@b.com\u200b")
@example("a@-b.com")
def test_email_shortcuts_give_what_the_long_way_gives(raw: str) -> None:
    try:
        got: str | None = recipients.validate_email_address(raw)
    except recipients.InvalidEmailAddress:
        got = None
    assert got == _address_the_long_way(raw)
