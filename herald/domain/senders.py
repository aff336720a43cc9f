"""What a service may send from and ask replies to go to, and what a single send may ask for beyond its
message: an SMS sender's text, a reply-to address, a one-click unsubscribe link and a scheduled time.
Pure, no I/O; messages name the field, as the v2 API's do."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Final

from herald.domain import inputs, recipients

# An alphanumeric sender ID: what networks show in place of a number, at most 11 characters (GSM 03.40).
MAX_ALPHANUMERIC: Final = 11
MIN_ALPHANUMERIC: Final = 3
# E.164: at most 15 digits. Short codes have 5 or 6.
MIN_NUMBER_DIGITS: Final = 5
MAX_NUMBER_DIGITS: Final = 15
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9 ]+")
_NUMBER = re.compile(r"\+?[0-9]+")
MAX_UNSUBSCRIBE_URL: Final = 2000
# Notify's rule for scheduled_for (its schema's format checker), and its messages.
MAX_SCHEDULE_AHEAD: Final = timedelta(hours=24)
SCHEDULED_IN_PAST: Final = "scheduled_for datetime can not be in the past"
SCHEDULED_TOO_FAR: Final = "scheduled_for datetime can only be 24 hours in the future"
# What keep_one_default's message calls each kind of sender (Notify's wording).
SMS_SENDER: Final = "SMS sender"
REPLY_TO: Final = "reply to email address"


class SenderError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def sms_sender(raw: str, field: str = "sms_sender") -> str:
    """A sender's text: a phone number or short code (digits, an optional leading +), or an alphanumeric
    sender ID of 3 to 11 letters, digits and spaces with at least one letter. Returned trimmed."""
    _check_text(raw, field, 64)
    text = raw.strip()
    if not text:
        raise SenderError(field, f"{field} Can't be empty")
    if _NUMBER.fullmatch(text):
        digits = text.removeprefix("+")
        if text.startswith("00"):
            raise SenderError(field, f"{field} cannot start with 00")
        if not MIN_NUMBER_DIGITS <= len(digits) <= MAX_NUMBER_DIGITS:
            raise SenderError(field, f"{field} as a number must have {MIN_NUMBER_DIGITS} to {MAX_NUMBER_DIGITS} digits")
        return text
    if not _ALPHANUMERIC.fullmatch(text):
        raise SenderError(field, f"{field} can only use letters, numbers and spaces, or be a phone number")
    if len(text) > MAX_ALPHANUMERIC:
        raise SenderError(field, f"{field} cannot be longer than {MAX_ALPHANUMERIC} characters")
    if len(text) < MIN_ALPHANUMERIC:
        raise SenderError(field, f"{field} must be at least {MIN_ALPHANUMERIC} characters")
    return text


def reply_to_address(raw: str, field: str = "email_address") -> str:
    _check_text(raw, field, 320)
    try:
        return recipients.validate_email_address(raw)
    except recipients.InvalidEmailAddress:
        raise SenderError(field, f"{field} {recipients.INVALID_EMAIL}") from None


def inbound_number(raw: str, field: str = "number") -> str:
    """A number a service receives texts on, in the one form numbers are stored and compared in
    (recipients.validate_phone_number's, "447700900123"), however it was written."""
    _check_text(raw, field, 64)
    try:
        return recipients.validate_phone_number(raw, allow_international=True)
    except recipients.RecipientError as exc:
        raise SenderError(field, f"{field} {exc.message}") from None


def unsubscribe_url(raw: str, field: str = "one_click_unsubscribe_url") -> str:
    """Notify's schema asks only that it begin with https (its message); Herald also bounds it, since it
    travels as a mail header."""
    _check_text(raw, field, MAX_UNSUBSCRIBE_URL)
    if not raw.startswith("https"):
        raise SenderError(field, f"{field} is not a valid https url")
    if any(c.isspace() for c in raw):
        raise SenderError(field, f"{field} must not contain whitespace")
    return raw


def scheduled_for(when: datetime, now: datetime) -> datetime:
    """Notify's rule: not in the past, at most 24 hours ahead."""
    if when < now:
        raise SenderError("scheduled_for", SCHEDULED_IN_PAST)
    if when > now + MAX_SCHEDULE_AHEAD:
        raise SenderError("scheduled_for", SCHEDULED_TOO_FAR)
    return when


def keep_one_default(kind: str, is_default: bool | None, currently_default: bool) -> None:
    """A service always has exactly one default of each kind (SMS_SENDER, REPLY_TO): the default moves
    only by making another one the default, never by unsetting it."""
    if is_default is False and currently_default:
        raise SenderError("is_default", f"You must have at least one {kind} as the default: make another the default")


def keep_inbound_number(current: str, new: str | None, is_inbound_number: bool) -> None:
    """An inbound number's sender is the number replies arrive on: its text cannot be changed."""
    if new is not None and new != current and is_inbound_number:
        raise SenderError("sms_sender", "You cannot update an inbound number")


def _check_text(raw: str, field: str, max_length: int) -> None:
    try:
        inputs.check_text(raw, field, max_length=max_length)
    except inputs.InputError as exc:
        raise SenderError(exc.field, exc.message) from None
