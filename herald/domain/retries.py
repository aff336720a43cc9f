"""The seed's retry schedule: after a failed hand-off, wait 10 s, 1 min, 5 min, 1 h, 4 h (5 h 6 min 10 s
in all), then the notification is a technical-failure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SEED_DELAYS: Final = (10.0, 60.0, 300.0, 3600.0, 14400.0)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    delays: tuple[float, ...] = SEED_DELAYS

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        """From "10,60,300,3600,14400" (seconds), as HERALD_RETRY_DELAYS gives it."""
        try:
            delays = tuple(float(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ValueError(f"retry delays must be comma-separated seconds, not {text!r}") from None
        if any(d < 0 for d in delays):
            raise ValueError(f"retry delays must not be negative: {text!r}")
        return cls(delays)

    def delay_after(self, attempts: int) -> float | None:
        """Seconds to wait after the `attempts`-th attempt failed, or None when there is no retry left."""
        return self.delays[attempts - 1] if 1 <= attempts <= len(self.delays) else None

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1
