"""Notification statuses and the one table of allowed transitions: statuses only move forward."""

from __future__ import annotations

from typing import Final

CREATED: Final = "created"
SENDING: Final = "sending"
SENT: Final = "sent"  # handed to an international SMS provider, which sends no receipt
PENDING: Final = "pending"
DELIVERED: Final = "delivered"
TEMPORARY_FAILURE: Final = "temporary-failure"
PERMANENT_FAILURE: Final = "permanent-failure"
TECHNICAL_FAILURE: Final = "technical-failure"
VALIDATION_FAILED: Final = "validation-failed"
CANCELLED: Final = "cancelled"

FINAL: Final = frozenset(
    {DELIVERED, TEMPORARY_FAILURE, PERMANENT_FAILURE, TECHNICAL_FAILURE, VALIDATION_FAILED, CANCELLED}
)
FAILURES: Final = frozenset({TEMPORARY_FAILURE, PERMANENT_FAILURE, TECHNICAL_FAILURE, VALIDATION_FAILED})
ALL: Final = frozenset({CREATED, SENDING, SENT, PENDING} | FINAL)
# Nothing more will happen to it: final, or handed to an international provider that sends no receipt
# (a job's row counts as done then).
DONE: Final = FINAL | {SENT}

# from-status -> the statuses it may move to. A receipt may update only a notification still in
# flight (Notify: created, sending, pending, sent); anything else is a duplicate or stale receipt.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    CREATED: frozenset({SENDING, SENT, PENDING} | FINAL),
    SENDING: frozenset({PENDING, SENT} | FINAL - {VALIDATION_FAILED, CANCELLED}),
    PENDING: frozenset({DELIVERED, TEMPORARY_FAILURE, PERMANENT_FAILURE, TECHNICAL_FAILURE}),
    SENT: frozenset({PENDING, DELIVERED, TEMPORARY_FAILURE, PERMANENT_FAILURE, TECHNICAL_FAILURE}),
}


def can_move(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def sources_for(new: str) -> tuple[str, ...]:
    """The statuses from which `new` may be reached: the guard of a conditional UPDATE."""
    return tuple(sorted(s for s, targets in TRANSITIONS.items() if new in targets))
