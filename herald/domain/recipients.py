"""Recipient validation as GOV.UK Notify does it: phone numbers and email addresses.

UK mobiles (the hot path) are checked by hand, the way Notify's `validate_uk_phone_number` does;
only numbers that are not UK-shaped go to the `phonenumbers` library. Messages are the v2 API's.
"""

from __future__ import annotations

import re

import phonenumbers

UK_PREFIX = "44"
INTERNATIONAL_NOT_ALLOWED = "Cannot send to international mobile numbers"
NOT_A_UK_MOBILE = "Not a UK mobile number"
TOO_SHORT = "Not enough digits"
TOO_LONG = "Too many digits"
UNKNOWN_CHARACTER = "Must not contain letters or symbols"
UNSUPPORTED_COUNTRY_CODE = "Not a valid country prefix"
INVALID_NUMBER = "Number is not valid – double check the phone number you entered"
INVALID_EMAIL = "Not a valid email address"

# Notify's ALL_WHITESPACE (including zero-width and no-break spaces) plus the punctuation people type in
# numbers: brackets, dashes, plus and (beyond Notify, which rejects them) dots.
_NUMBER_PUNCTUATION = str.maketrans("", "", " \t\n\r\x0b\x0c\u180e\u200b\u200c\u200d\u2060\ufeff\u00a0()-+.")
# Types Notify will send to abroad; premium-rate and the like are refused.
_SENDABLE_TYPES = frozenset(
    (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    )
)
_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: UNSUPPORTED_COUNTRY_CODE,
    phonenumbers.NumberParseException.TOO_SHORT_NSN: TOO_SHORT,
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: TOO_SHORT,
    phonenumbers.NumberParseException.TOO_LONG: TOO_LONG,
}
_POSSIBILITY_ERRORS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: UNSUPPORTED_COUNTRY_CODE,
    phonenumbers.ValidationResult.TOO_SHORT: TOO_SHORT,
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: TOO_SHORT,
    phonenumbers.ValidationResult.TOO_LONG: TOO_LONG,
}


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


def _looks_uk(raw: str, significant: str) -> bool:
    """Notify's is_uk_phone_number: a national 0 (not an international 00), a 44, or a bare 7xxx number."""
    if raw.startswith("0") and not raw.startswith("00"):
        return True
    return significant.startswith(UK_PREFIX) or (significant.startswith("7") and len(significant) < 11)


def _validate_uk_mobile(significant: str) -> str:
    national = significant[len(UK_PREFIX) :] if significant.startswith(UK_PREFIX) else significant
    national = national.lstrip("0")  # the "(0)" in "+44 (0)7700 900123"
    if not national.startswith("7"):
        raise InvalidPhoneNumber(NOT_A_UK_MOBILE)
    if len(national) > 10:
        raise InvalidPhoneNumber(TOO_LONG)
    if len(national) < 10:
        raise InvalidPhoneNumber(TOO_SHORT)
    return UK_PREFIX + national


def _validate_international(significant: str, *, allow_international: bool) -> str:
    if len(significant) < 8:
        raise InvalidPhoneNumber(TOO_SHORT)
    if len(significant) > 15:
        raise InvalidPhoneNumber(TOO_LONG)
    try:
        number = phonenumbers.parse("+" + significant, None)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhoneNumber(_PARSE_ERRORS.get(error.error_type, INVALID_NUMBER)) from error
    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise InvalidPhoneNumber(_POSSIBILITY_ERRORS.get(possibility, INVALID_NUMBER))
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in _SENDABLE_TYPES:
        raise InvalidPhoneNumber(INVALID_NUMBER)
    if not allow_international:
        raise InternationalNotAllowed()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def validate_phone_number(raw: str, *, allow_international: bool = False) -> str:
    """Return the number as digits with the country code and no plus ("447700900123"), or raise
    InvalidPhoneNumber (InternationalNotAllowed for a valid non-UK number the service may not text)."""
    digits = raw.translate(_NUMBER_PUNCTUATION)
    if not digits:
        raise InvalidPhoneNumber(TOO_SHORT)
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidPhoneNumber(UNKNOWN_CHARACTER)
    significant = digits.lstrip("0")
    if _looks_uk(raw.lstrip(), significant):
        return _validate_uk_mobile(significant)
    return _validate_international(significant, allow_international=allow_international)


def is_uk_mobile(normalised: str) -> bool:
    """True for the output of validate_phone_number when it is a UK mobile number."""
    return len(normalised) == 12 and normalised.startswith("447") and normalised.isdigit()


# Email rules as in Notify's validate_email_address: a strict local part (no quotes or semicolons, which
# upset SES), an IDNA-encodable host of valid labels, and a TLD of letters (or punycode).
_OBSCURE_WHITESPACE = str.maketrans("", "", "\u180e\u200b\u200c\u200d\u2060\ufeff\u00a0")
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
_EMAIL = re.compile(r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~\-]+@([^.@][^@\s]+)")
_HOSTNAME_LABEL = re.compile(r"(xn|[a-z0-9]+)(-?-[a-z0-9]+)*", re.IGNORECASE)
_TLD = re.compile(r"([a-z]{2,63}|xn--([a-z0-9]+-)*[a-z0-9]+)", re.IGNORECASE)


def validate_email_address(raw: str) -> str:
    """Return the address without surrounding (or invisible) whitespace, or raise InvalidEmailAddress."""
    address = raw.translate(_OBSCURE_WHITESPACE).strip(_ASCII_WHITESPACE)
    match = _EMAIL.fullmatch(address)
    if not match or len(address) > 320 or ".." in address:
        raise InvalidEmailAddress()
    try:
        hostname = match.group(1).encode("idna").decode("ascii")
    except UnicodeError as error:
        raise InvalidEmailAddress() from error
    labels = hostname.split(".")
    if len(hostname) > 253 or len(labels) < 2:
        raise InvalidEmailAddress()
    if not all(label and len(label) <= 63 and _HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise InvalidEmailAddress()
    if not _TLD.fullmatch(labels[-1]):
        raise InvalidEmailAddress()
    return address
