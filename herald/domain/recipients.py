"""Recipient validation as GOV.UK Notify does it: phone numbers and email addresses.

Phone numbers follow Notify's `PhoneNumber` (notifications-utils): the number is parsed with
`phonenumbers` first, so anything that does not parse or is not a valid number is "Number is not valid";
then the service's permissions (international, no UK landlines) and Notify's international billing list
are checked, in that order. Messages are the v2 API's. A number shaped like a UK mobile (the hot path)
is checked against phonenumbers' own mobile patterns without a full parse; the unit tests check that
shortcut against the full path.
"""

from __future__ import annotations

import functools
import re
import string

import phonenumbers

from herald.domain import international

UK_PREFIX = international.UK_PREFIX
INTERNATIONAL_NOT_ALLOWED = "Cannot send to international mobile numbers"
NOT_A_UK_MOBILE = "Not a UK mobile number"
TOO_SHORT = "Not enough digits"
TOO_LONG = "Too many digits"
UNKNOWN_CHARACTER = "Must not contain letters or symbols"
UNSUPPORTED_COUNTRY_CODE = "Not a valid country prefix"
INVALID_NUMBER = "Number is not valid – double check the phone number you entered"
INVALID_EMAIL = "Not a valid email address"

# Typed or pasted characters Notify normalises away before looking at a number: dashes and hyphens
# become "-", wide spaces " ", zero-width characters nothing. Dots become spaces too: beyond Notify,
# which refuses them, because "07700.900.123" is a common way to write a number.
_TYPOGRAPHY = str.maketrans(
    {
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d", "-"),
        **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a", " "),
        **dict.fromkeys("\u202f\u205f\u3000.", " "),
        **dict.fromkeys("\u180e\u200b\u200c\u200d\u2060\ufeff", None),
    }
)
# Notify's allowed characters: its ALL_WHITESPACE, brackets, dash, plus and digits. Control characters
# other than ASCII whitespace are letters-or-symbols; ASCII whitespace inside a number makes it unparseable.
_NUMBER_CHARACTERS = frozenset(string.whitespace + "()-+0123456789")
# Types Notify will send to; premium rate, toll-free, pagers, shared cost and VoIP are refused.
_SENDABLE_TYPES = frozenset(
    (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    )
)
_LANDLINE_TYPES = frozenset(
    (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.UAN,
    )
)
_POSSIBILITY_ERRORS = {
    phonenumbers.ValidationResult.TOO_SHORT: TOO_SHORT,
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: TOO_SHORT,
    phonenumbers.ValidationResult.TOO_LONG: TOO_LONG,
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: UNSUPPORTED_COUNTRY_CODE,
}
# Ofcom's range for drama (07700 900000 to 900999): phonenumbers calls these invalid, Notify sends to
# them. Notify's own pattern for it is looser by mistake and passes any 07700 number of a possible length.
_TV_NUMBER = re.compile(r"7700900\d{3}")
# A UK mobile as phonenumbers would place it: fits the mobile pattern of Great Britain or of a Crown
# Dependency (the +44 regions).
_UK_MOBILE = international.mobile_pattern(*phonenumbers.COUNTRY_CODE_TO_REGION_CODE[int(UK_PREFIX)])
# A plainly written UK mobile once its spaces, dashes and brackets are gone, in one match: +44, 44, 0044
# or no country code, the national 0 or not ("+44 (0)7700..."), then a national number that fits a
# mobile pattern or is a drama number. Without a country code or a 0 it must be the bare 10 digits, and a
# "+" must start +44; ASCII digits only. (The unit tests check this against the full path.)
_FAST_UK_MOBILE = re.compile(
    rf"(?:\+?{UK_PREFIX}|00{UK_PREFIX})?0?({_UK_MOBILE.pattern}|{_TV_NUMBER.pattern})", re.ASCII
)


class RecipientError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPhoneNumber(RecipientError):
    pass


class InternationalNotAllowed(InvalidPhoneNumber):
    def __init__(self) -> None:
        super().__init__(INTERNATIONAL_NOT_ALLOWED)


class InvalidEmailAddress(RecipientError):
    def __init__(self) -> None:
        super().__init__(INVALID_EMAIL)


def _fast_uk_mobile(text: str) -> str | None:
    """The national number of a plainly written UK mobile ("07700 900123", "+44 (0)7700-900123",
    "447700900123"), or None for anything else, which then takes the full path."""
    stripped = text.strip(string.whitespace)
    if "+" in stripped[1:]:
        return None
    digits = stripped.replace(" ", "")
    if "-" in digits or "(" in digits or ")" in digits:
        digits = digits.replace("-", "").replace("(", "").replace(")", "")
    match = _FAST_UK_MOBILE.fullmatch(digits)
    return None if match is None else match[1]


def _is_tv_number(number: phonenumbers.PhoneNumber) -> bool:
    return number.country_code == int(UK_PREFIX) and bool(_TV_NUMBER.fullmatch(str(number.national_number)))


def _forced_international(text: str) -> phonenumbers.PhoneNumber | None:
    # Spreadsheets drop the leading + of "+33 6 ..." : retry as international when the number is not
    # possible as a UK one.
    try:
        number = phonenumbers.parse("+" + text, None)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def _parse(text: str) -> phonenumbers.PhoneNumber:
    if not _NUMBER_CHARACTERS.issuperset(text):
        raise InvalidPhoneNumber(UNKNOWN_CHARACTER)
    if not text:
        raise InvalidPhoneNumber(TOO_SHORT)
    try:
        number = phonenumbers.parse(text, "GB")  # without a country code, a number is taken as British
    except phonenumbers.NumberParseException as error:
        raise InvalidPhoneNumber(INVALID_NUMBER) from error
    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility != phonenumbers.ValidationResult.IS_POSSIBLE:
        forced = _forced_international(text)
        if forced is None:
            raise InvalidPhoneNumber(_POSSIBILITY_ERRORS.get(possibility, INVALID_NUMBER))
        number = forced
    valid = phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in _SENDABLE_TYPES
    if not valid and not _is_tv_number(number):
        raise InvalidPhoneNumber(INVALID_NUMBER)
    return number


def _parse_leniently(text: str) -> phonenumbers.PhoneNumber:
    try:
        return _parse(text)
    except InvalidPhoneNumber:
        # Near misses Notify gives the benefit of the doubt: "0+447700900100", "000007700900100",
        # "+07700900100". Only after a failure, or "+1 500 555 1234" would be read as a UK landline.
        return _parse(text.replace("+", "").lstrip("0"))


def _check_sendable(number: phonenumbers.PhoneNumber, *, allow_international: bool) -> None:
    """Notify's checks of a parsed number, in its order: permission, landline, billing list."""
    is_uk = number.country_code == int(UK_PREFIX)
    # +44 includes the Crown Dependencies: abroad for billing, but they need no international permission.
    if not is_uk and not allow_international:
        raise InternationalNotAllowed()
    if is_uk and phonenumbers.number_type(number) in _LANDLINE_TYPES:
        raise InvalidPhoneNumber(NOT_A_UK_MOBILE)
    if not is_uk and not international.is_supported_country_code(number.country_code):
        raise InvalidPhoneNumber(UNSUPPORTED_COUNTRY_CODE)


def validate_phone_number(raw: str, *, allow_international: bool = False) -> str:
    """Return the number as digits with the country code and no plus ("447700900123"), or raise
    InvalidPhoneNumber (InternationalNotAllowed for a valid non-UK number the service may not text)."""
    # Of the typography, only "." is ASCII: a replace is far cheaper than translating through the table.
    text = raw.replace(".", " ") if raw.isascii() else raw.translate(_TYPOGRAPHY)
    if (national := _fast_uk_mobile(text)) is not None:
        return UK_PREFIX + national
    number = _parse_leniently(text)
    _check_sendable(number, allow_international=allow_international)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def is_uk_mobile(normalised: str) -> bool:
    """True for the output of validate_phone_number when it is a UK mobile number."""
    return len(normalised) == 12 and normalised.startswith("447") and normalised.isdigit()


# Email rules as in Notify's validate_email_address: a strict local part (no quotes or semicolons, which
# upset SES), an IDNA-encodable host of valid labels, and a TLD of letters (or punycode).
_OBSCURE_WHITESPACE = str.maketrans("", "", "\u180e\u200b\u200c\u200d\u2060\ufeff\u00a0")
# Stripped from the ends like other whitespace (Notify's strip_and_remove_obscure_whitespace), including
# the line and paragraph separators that copying from a word processor leaves behind.
_SURROUNDING_WHITESPACE = " \t\n\r\x0b\x0c\u2028\u2029"
_EMAIL = re.compile(r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~\-]+@([^.@][^@\s]+)")
_HOSTNAME_LABEL = re.compile(r"(xn|[a-z0-9]+)(-?-[a-z0-9]+)*", re.IGNORECASE)
_TLD = re.compile(r"([a-z]{2,63}|xn--([a-z0-9]+-)*[a-z0-9]+)", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _valid_hostname(hostname: str) -> bool:
    """Whether an address's host is an IDNA-encodable name of valid labels with a valid TLD. Kept for a few
    thousand hosts: a batch's addresses share a handful of domains, and the label checks were a sixth of an
    email's cost in a batch."""
    if not hostname.isascii():  # IDNA leaves an ASCII name as it is (its label checks are repeated below)
        try:
            hostname = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    labels = hostname.split(".")
    if len(hostname) > 253 or len(labels) < 2:
        return False
    if not all(label and len(label) <= 63 and _HOSTNAME_LABEL.fullmatch(label) for label in labels):
        return False
    return _TLD.fullmatch(labels[-1]) is not None


def validate_email_address(raw: str) -> str:
    """Return the address without surrounding (or invisible) whitespace, or raise InvalidEmailAddress."""
    # The obscure whitespace is all outside ASCII, so the usual address needs no translate pass.
    address = (raw if raw.isascii() else raw.translate(_OBSCURE_WHITESPACE)).strip(_SURROUNDING_WHITESPACE)
    match = _EMAIL.fullmatch(address)
    if not match or len(address) > 320 or ".." in address:
        raise InvalidEmailAddress()
    if not _valid_hostname(match.group(1)):
        raise InvalidEmailAddress()
    return address
