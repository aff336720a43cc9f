"""Notify's per-service rules as pure functions, no I/O: sending limits and trial mode
(`app/notifications/validators.py`), and the retention cutoff (`nightly_tasks`).

The rate limit is a token bucket per service and key type; the daily limits count messages per service,
type and UTC day; trial mode and team keys restrict who may be sent to. The counters themselves live in
herald/limits (Redis, or the process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

RATE_INTERVAL_SECONDS = 60
MAX_BUCKET_SIZE = 1000
DEFAULT_RATE_LIMIT = 3000
DEFAULT_SMS_LIMIT = 999_999_999
DEFAULT_EMAIL_LIMIT = 999_999_999
DEFAULT_INTERNATIONAL_SMS_LIMIT = 250_000
# Bounds an operator can set. Above them a number is a typo, not a decision: a billion a minute is past any
# provider, and a daily count past 10^12 is past any population.
MAX_RATE_LIMIT = 1_000_000
MAX_DAILY_LIMIT = 1_000_000_000_000
DAILY_COUNT_TTL_SECONDS = 24 * 60 * 60
# Data retention per service and notification type (Notify's service_data_retention).
DEFAULT_RETENTION_DAYS = 7
MIN_RETENTION_DAYS = 3
MAX_RETENTION_DAYS = 90
LONDON = ZoneInfo("Europe/London")

TEAM_KEY_MESSAGE = "Can’t send to this recipient using a team-only API key"
TRIAL_MODE_MESSAGE = (
    "Can’t send to this recipient when service is in trial mode – "
    "see https://www.notifications.service.gov.uk/trial-mode"
)

# Key types that count towards the daily limits: test keys send anywhere, uncounted.
COUNTED_KEY_TYPES = frozenset({"normal", "team"})


class LimitExceeded(Exception):
    """Notify's 429s: the message is what the caller sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RateLimitExceeded(LimitExceeded):
    pass


class DailyLimitExceeded(LimitExceeded):
    pass


def bucket_size(rate_limit: int) -> int:
    return min(math.ceil(rate_limit / 3) + 1, MAX_BUCKET_SIZE)


def refill_per_second(rate_limit: int) -> float:
    return rate_limit / RATE_INTERVAL_SECONDS


def bucket_key(service_id: str, key_type: str) -> str:
    return f"{service_id}-tokens-{key_type}"


def daily_count_key(service_id: str, kind: str, now: datetime) -> str:
    """`now` in UTC: Notify's counters roll over at UTC midnight."""
    return f"{service_id}-{kind}-{now.date().isoformat()}-count"  # isoformat: strftime costs 4x more


def rate_limit_message(key_type: str, rate_limit: int) -> str:
    # Notify's public API calls normal keys "live".
    shown = "LIVE" if key_type == "normal" else key_type.upper()
    return f"Exceeded rate limit for key type {shown} of {rate_limit} requests per {RATE_INTERVAL_SECONDS} seconds"


def daily_limit_message(kind: str, limit: int) -> str:
    return f"Exceeded send limits ({kind}: {limit}) for today"


@dataclass(frozen=True, slots=True)
class DailyLimit:
    kind: str  # sms | email | international_sms
    limit: int


def daily_limits(
    notification_type: str,
    international: bool,
    sms_limit: int,
    email_limit: int,
    international_sms_limit: int,
) -> tuple[DailyLimit, ...]:
    """The counters one message adds to: an international text counts as a text and as an international one."""
    if notification_type == "email":
        return (DailyLimit("email", email_limit),)
    if international:
        return (DailyLimit("sms", sms_limit), DailyLimit("international_sms", international_sms_limit))
    return (DailyLimit("sms", sms_limit),)


@dataclass(slots=True)
class Bucket:
    """A token bucket's state. Redis runs the same arithmetic in Lua (herald/limits/redis_counter.py)."""

    tokens: float
    at: float

    def refill(self, now: float, refill: float, size: int) -> None:
        self.tokens = min(float(size), self.tokens + max(0.0, now - self.at) * refill)
        self.at = now


def restriction_message(key_type: str, restricted: bool) -> str | None:
    """Which rule limits the recipients, if any: a team key always, a normal key on a restricted service."""
    if key_type == "team":
        return TEAM_KEY_MESSAGE
    if key_type == "normal" and restricted:
        return TRIAL_MODE_MESSAGE
    return None


def check_limit_value(field: str, value: int, minimum: int, maximum: int) -> str | None:
    """The message for a limit an operator may not set, or None."""
    if value < minimum:
        return f"{field} must be at least {minimum}"
    if value > maximum:
        return f"{field} must be at most {maximum}"
    return None


def retention_cutoff(now: datetime, days: int) -> datetime:
    """Notify's: London midnight of (London's today - days); rows created before it have expired."""
    today = now.astimezone(LONDON).date()
    return datetime.combine(today - timedelta(days=days), time(0), tzinfo=LONDON)
