"""Template rendering and validation, as GOV.UK Notify does it: pure functions, no I/O.

    render_sms(body, personalisation, prefix=...)       -> RenderedSms
    render_email(subject, body, personalisation, ...)   -> RenderedEmail
    email_parts(body)                                   -> the HTML and text parts render_email(html=False) left out

Both raise a TemplateError subclass whose `.message` is the exact text Notify's v2 API returns.
"""

from herald.domain.templates._email import EmailParts, RenderedEmail, email_parts, render_email
from herald.domain.templates._errors import (
    EMAIL_MAX_BYTES,
    SMS_CHAR_COUNT_LIMIT,
    EmptyMessage,
    MessageTooLong,
    MissingPersonalisation,
    TemplateError,
)
from herald.domain.templates._placeholders import placeholders
from herald.domain.templates._sms import RenderedSms, render_sms, sanitise_sms, sms_fragment_count

__all__ = [
    "EMAIL_MAX_BYTES",
    "SMS_CHAR_COUNT_LIMIT",
    "EmailParts",
    "EmptyMessage",
    "MessageTooLong",
    "MissingPersonalisation",
    "RenderedEmail",
    "RenderedSms",
    "TemplateError",
    "email_parts",
    "placeholders",
    "render_email",
    "render_sms",
    "sanitise_sms",
    "sms_fragment_count",
]
