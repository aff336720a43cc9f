"""When a periodic task is due: daily at HH:MM UTC, hourly at minute M, or every N seconds.

All three are one shape, a period and an offset from the Unix epoch (a UTC midnight), so a slot is
the same instant on every replica and "due" is simply "not started since the latest slot". A slot
missed while no scheduler was running is caught up once, not once per missed slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Schedule:
    period: timedelta
    offset: timedelta
    description: str

    @classmethod
    def daily(cls, hour: int, minute: int = 0) -> Schedule:
        if not (0 <= hour < 24 and 0 <= minute < 60):
            raise ValueError(f"no such time of day: {hour:02d}:{minute:02d}")
        return cls(timedelta(days=1), timedelta(hours=hour, minutes=minute), f"daily at {hour:02d}:{minute:02d} UTC")

    @classmethod
    def hourly(cls, minute: int) -> Schedule:
        if not 0 <= minute < 60:
            raise ValueError(f"no such minute: {minute}")
        return cls(timedelta(hours=1), timedelta(minutes=minute), f"hourly at minute {minute}")

    @classmethod
    def every(cls, seconds: int) -> Schedule:
        if seconds <= 0:
            raise ValueError(f"period must be positive, not {seconds}")
        return cls(timedelta(seconds=seconds), timedelta(0), f"every {seconds} s")

    def latest_slot(self, now: datetime) -> datetime:
        """The last instant at or before `now` at which the task was due."""
        return _EPOCH + self.offset + ((now - _EPOCH - self.offset) // self.period) * self.period

    def is_due(self, last_started: datetime | None, now: datetime) -> bool:
        return last_started is None or last_started < self.latest_slot(now)

    def next_run(self, last_started: datetime | None, now: datetime) -> datetime:
        return now if self.is_due(last_started, now) else self.latest_slot(now) + self.period
