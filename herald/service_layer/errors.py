"""Errors the use cases raise; entrypoints map them to gRPC statuses (and the gateway to Notify's 4xx)."""

from __future__ import annotations


class InvalidRequest(Exception):
    """Bad input: nothing was changed. `violations` are (field, Notify's message) pairs."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__(violations[0][1])
        self.violations = violations

    @classmethod
    def one(cls, field: str, message: str) -> InvalidRequest:
        return cls([(field, message)])


class NotFound(Exception):
    def __init__(self, message: str = "No result found") -> None:
        super().__init__(message)
        self.message = message
