"""A CSV job's statuses, Notify's names, and which of them end a job: one home for the database's check,
the use cases and the CLI."""

from __future__ import annotations

from typing import Final

PENDING: Final = "pending"
SCHEDULED: Final = "scheduled"
IN_PROGRESS: Final = "in progress"
FINISHED: Final = "finished"
CANCELLED: Final = "cancelled"
SENDING_LIMITS_EXCEEDED: Final = "sending limits exceeded"
# Its stored file no longer passes (the service changed since it was checked): nothing was sent from it.
ERROR: Final = "error"

ALL: Final = (PENDING, SCHEDULED, IN_PROGRESS, FINISHED, CANCELLED, SENDING_LIMITS_EXCEEDED, ERROR)
# Ended before its rows went out: nothing more will happen to the job.
STOPPED: Final = frozenset({CANCELLED, SENDING_LIMITS_EXCEEDED, ERROR})
ENDED: Final = STOPPED | {FINISHED}
