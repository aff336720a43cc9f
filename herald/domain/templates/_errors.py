"""Errors raised while rendering a template; `.message` is the exact text Notify's v2 API returns."""

from __future__ import annotations

from collections.abc import Sequence

SMS_CHAR_COUNT_LIMIT = 918
EMAIL_MAX_BYTES = 2_000_000


class TemplateError(ValueError):
    """A documented, user-facing rendering failure (Notify answers these with a 400 BadRequestError)."""

    field: str = "template"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingPersonalisation(TemplateError):
    field = "personalisation"

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(f"Missing personalisation: {', '.join(self.missing)}")


class MessageTooLong(TemplateError):
    def __init__(self, message: str, *, length: int, limit: int) -> None:
        super().__init__(message)
        self.length = length
        self.limit = limit

    @classmethod
    def sms(cls, characters: int) -> MessageTooLong:
        return cls(
            "Your message is too long. "
            f"Text messages cannot be longer than {SMS_CHAR_COUNT_LIMIT} characters. "
            f"Your message is {characters} characters long.",
            length=characters,
            limit=SMS_CHAR_COUNT_LIMIT,
        )

    @classmethod
    def email(cls, size_in_bytes: int) -> MessageTooLong:
        return cls(
            "Your message is too long. "
            f"Emails cannot be longer than {EMAIL_MAX_BYTES} bytes. "
            f"Your message is {size_in_bytes} bytes.",
            length=size_in_bytes,
            limit=EMAIL_MAX_BYTES,
        )


class EmptyMessage(TemplateError):
    def __init__(self) -> None:
        super().__init__("Your message is empty.")
