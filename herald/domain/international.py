"""Where Notify will send a text message, and what it costs: its international billing list.

`data/international_sms_rates.csv` is Notify's list (country prefix, rate multiplier, delivery-receipt
support, country names). A number whose country prefix is not in it is refused; a message to a number
that is in it is billed at its multiplier. UK numbers are billed at 1; the Crown Dependencies (Jersey,
Guernsey, the Isle of Man) share +44 but are billed at the list's +44 multiplier, as Notify does.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources

import phonenumbers

UK_PREFIX = "44"
# North American Numbering Plan: the list names some +1 areas (Bahamas 1242, Montserrat 1664...) as
# countries of their own, each with its own rate; any other +1 number is billed as plain +1.
_NANP_PREFIX = "1"
_NANP_AREA_LENGTH = 4


@dataclass(frozen=True, slots=True)
class Billing:
    prefix: str  # the list's country prefix: "44", "33", "1" or a +1 area such as "1242"
    multiplier: float  # fragments are billed this many times over
    receipts: bool  # whether the destination's networks send delivery receipts


@dataclass(frozen=True, slots=True)
class _Rate:
    multiplier: float
    receipts: bool
    names: str


def _load_rates() -> dict[str, _Rate]:
    text = resources.files("herald.domain").joinpath("data/international_sms_rates.csv").read_text("utf-8")
    # Only "YES" promises receipts: "Carrier DLR" (some carriers only) and blank are treated as none,
    # as Notify treats anything but "yes".
    return {
        row["country_prefix"]: _Rate(float(row["rate_multiplier"]), row["dlr"].strip().lower() == "yes", row["names"])
        for row in csv.DictReader(text.splitlines())
    }


RATES = _load_rates()
# Country codes have at most 3 digits; the list's longer prefixes are +1 areas.
COUNTRY_PREFIXES = frozenset(prefix for prefix in RATES if len(prefix) <= 3)
_UK = Billing(UK_PREFIX, 1.0, True)


def mobile_pattern(*regions: str) -> re.Pattern[str]:
    """phonenumbers' national-number pattern for the mobiles of these regions."""
    patterns = []
    for region in regions:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is not None and metadata.mobile is not None and metadata.mobile.national_number_pattern:
            patterns.append(f"(?:{metadata.mobile.national_number_pattern})")
    return re.compile("|".join(patterns))


# Mobiles of Jersey, Guernsey and the Isle of Man share +44 with Great Britain. phonenumbers gives a +44
# number to Great Britain first when it fits a British pattern, so a Crown Dependency mobile is one that
# fits theirs and not Britain's. Both patterns come from phonenumbers' own metadata, so a UK mobile is
# placed without a full parse, in one match (this runs for every text message): Britain's pattern comes
# first, so the Crown Dependencies' group is set only for a number that does not fit it.
_CROWN_DEPENDENCY_NOT_GB = re.compile(
    "{}|({})".format(
        mobile_pattern("GB").pattern,
        mobile_pattern(
            *(region for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[int(UK_PREFIX)] if region != "GB")
        ).pattern,
    )
)
_CROWN_DEPENDENCY = Billing(UK_PREFIX, RATES[UK_PREFIX].multiplier, RATES[UK_PREFIX].receipts)


def is_supported_country_code(country_code: int | None) -> bool:
    return str(country_code) in COUNTRY_PREFIXES


def billing_prefix(number: phonenumbers.PhoneNumber) -> str:
    """Notify's `PhoneNumber.prefix`: the country code, or for +1 the 4-digit area when the list names it."""
    if number.country_code == int(_NANP_PREFIX):
        area = _NANP_PREFIX + str(number.national_number)[: _NANP_AREA_LENGTH - 1]
        if area in RATES:
            return area
    return str(number.country_code)


def international_billing(normalised_number: str) -> Billing:
    """Billing for a number as `validate_phone_number` returns it (digits with the country code, no plus).

    Raises ValueError for a number that did not come from `validate_phone_number`."""
    if normalised_number.startswith(UK_PREFIX):
        placed = _CROWN_DEPENDENCY_NOT_GB.fullmatch(normalised_number, len(UK_PREFIX))
        return _UK if placed is None or placed[1] is None else _CROWN_DEPENDENCY
    try:
        number = phonenumbers.parse("+" + normalised_number, None)
    except phonenumbers.NumberParseException as error:
        raise ValueError(f"not a normalised phone number: {normalised_number!r}") from error
    prefix = billing_prefix(number)
    rate = RATES.get(prefix)
    if rate is None:
        raise ValueError(f"country prefix {prefix} is not in the international billing list")
    return Billing(prefix, rate.multiplier, rate.receipts)
