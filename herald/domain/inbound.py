"""Received text messages (Notify's inbound SMS): what a provider's inbound message must hold, and how its
numbers and date are written down. Pure, no I/O.

MMG and Firetext write the number the message was sent to (Herald's inbound number) in international form
("447700900123"); Notify strips the leading 44 and looks it up as "07700900123". Herald compares numbers
in one form, `phone_number`'s, whichever way either side wrote them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from herald.domain import inputs, recipients
from herald.domain.limits import LONDON

PROVIDERS: Final = ("mmg", "firetext")
MAX_NUMBER_LENGTH: Final = 32
# The longest concatenated text a phone can send: 255 parts of 153 GSM characters.
MAX_CONTENT_LENGTH: Final = 255 * 153
MAX_REFERENCE_LENGTH: Final = 255
# How MMG and Firetext write the time a message arrived: London's wall clock (Notify's format_mmg_datetime).
_PROVIDER_DATE_FORMATS: Final = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f")


class InboundError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _text(value: str, field: str, max_length: int) -> str:
    try:
        inputs.check_text(value, field, max_length=max_length)
    except inputs.InputError as exc:
        raise InboundError(exc.field, exc.message) from None
    return value


def phone_number(raw: str, field: str) -> str:
    """A number as Herald stores numbers ("447700900123", recipients.validate_phone_number's form) when it
    is a valid one, else as the provider wrote it (Notify's try_validate_and_format_phone_number). Both
    Herald's inbound number (inbound_numbers.number is kept in that form) and the sender's: so "07700900123",
    "+44 7700 900123" and MMG's "447700900123" are one number. A number that is not valid is kept, not
    refused: a destination no service owns is dropped later, as Notify drops it, and a sender is shown as
    sent."""
    number = _text(raw, field, MAX_NUMBER_LENGTH).strip()
    if not number:
        raise InboundError(field, f"{field} is required")
    try:
        return recipients.validate_phone_number(number, allow_international=True)
    except recipients.RecipientError:
        return number


def content(raw: str) -> str:
    """What the sender wrote. An empty text is a message too (a phone can send one)."""
    return _text(raw, "content", MAX_CONTENT_LENGTH)


def provider_reference(raw: str) -> str:
    return _text(raw, "provider_reference", MAX_REFERENCE_LENGTH)


def provider_date(raw: str) -> datetime | None:
    """The provider's arrival time, London wall-clock time ("2017-05-21 11:56:11"), as an aware datetime;
    None when the provider gave none (MMG's is optional)."""
    text = _text(raw, "provider_date", 64).strip()
    if not text:
        return None
    for form in _PROVIDER_DATE_FORMATS:
        try:
            return datetime.strptime(text, form).replace(tzinfo=LONDON)
        except ValueError:
            continue
    raise InboundError("provider_date", "provider_date is not a date and time (YYYY-MM-DD HH:MM:SS)")
