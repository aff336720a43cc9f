"""Notify's international billing list: which countries a text can go to, and at what multiplier."""

from __future__ import annotations

import csv
from pathlib import Path

import phonenumbers
import pytest

from herald.domain.international import COUNTRY_PREFIXES, RATES, Billing, international_billing
from herald.domain.recipients import validate_phone_number

REFERENCE = Path(__file__).parents[3] / "herald" / "domain" / "data" / "international_sms_rates.csv"


def test_the_list_is_read_whole() -> None:
    with REFERENCE.open(encoding="utf-8") as rows:
        prefixes = [row["country_prefix"] for row in csv.DictReader(rows)]
    assert sorted(RATES) == sorted(prefixes)
    assert len(RATES) == 223
    assert RATES["82"].names == "Korea, Republic of"  # a quoted name with a comma
    assert "1242" in RATES and "1242" not in COUNTRY_PREFIXES  # a +1 area is not a country code
    assert {"1", "44", "33", "7"} <= COUNTRY_PREFIXES
    assert not {"290", "247", "850", "870", "881"} & COUNTRY_PREFIXES


@pytest.mark.parametrize(
    ("raw", "billing"),
    [
        ("07700 900123", Billing("44", 1.0, True)),  # Great Britain, and TV numbers with it
        ("07912 345678", Billing("44", 1.0, True)),
        ("07911 123456", Billing("44", 2.0, True)),  # 07911 1: Guernsey
        ("07000 123456", Billing("44", 1.0, True)),  # UK personal number
        ("07797 123456", Billing("44", 2.0, True)),  # Jersey: +44, but billed abroad, as Notify
        ("07781 123456", Billing("44", 2.0, True)),  # Guernsey
        ("07624 123456", Billing("44", 2.0, True)),  # Isle of Man
        ("+1 650 253 0000", Billing("1", 1.0, False)),  # receipts from some carriers only
        ("+1 242 359 1234", Billing("1242", 3.0, False)),  # Bahamas: a +1 area with its own rate
        ("+1 340 712 3456", Billing("1", 1.0, False)),  # US Virgin Islands: not listed, billed as +1
        ("+33 6 12 34 56 78", Billing("33", 2.0, True)),
        ("+49 1512 3456789", Billing("49", 5.0, True)),
        ("+7 912 345 67 89", Billing("7", 10.0, True)),
        ("+886 912 345 678", Billing("886", 2.0, False)),  # "NO"
        ("+262 692 12 34 56", Billing("262", 3.0, False)),  # blank: unknown, so none
    ],
)
def test_international_billing(raw: str, billing: Billing) -> None:
    assert international_billing(validate_phone_number(raw, allow_international=True)) == billing


def test_billing_agrees_with_phonenumbers_on_the_crown_dependencies() -> None:
    # The UK shortcut places a mobile without parsing it; phonenumbers must agree on every range.
    for block in range(7000, 8000):
        normalised = f"44{block}123456"
        number = phonenumbers.parse("+" + normalised)
        if phonenumbers.number_type(number) != phonenumbers.PhoneNumberType.MOBILE:
            continue
        abroad = phonenumbers.region_code_for_number(number) != "GB"
        assert international_billing(normalised).multiplier == (2.0 if abroad else 1.0), normalised


@pytest.mark.parametrize("normalised", ["", "999123", "2905123"])
def test_billing_refuses_what_validation_would_have_refused(normalised: str) -> None:
    with pytest.raises(ValueError):
        international_billing(normalised)
