"""The service's rules on every send: trial mode and team keys, then the rate limit and the daily limits.

Called by Sender.send once the recipient is valid and the message rendered, so a send refused for its
content is not counted (Notify counts the rate limit before validating; Herald after, see
docs/architecture.md). Team members and the guest list are read only when a rule needs them, and kept like
auth.py's services and keys: for `cache_seconds`, and while the database is away for `stale_seconds` more.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine

from herald import metrics
from herald.db import services as services_db
from herald.db.errors import is_transient
from herald.domain import limits, recipients
from herald.limits import ALLOWED, RATE_LIMITED, SendCounter
from herald.limits.local_counter import LocalSendCounter
from herald.limits.redis_counter import RedisSendCounter
from herald.queues.codec import TYPE_NAMES
from herald.service_layer.auth import Caller
from herald.service_layer.errors import InvalidRequest
from herald.settings import Settings
from herald.v1.notifications_pb2 import NotificationType


class ServiceRules:
    def __init__(
        self,
        engine: Engine,
        counter: SendCounter | None,
        cache_seconds: float = 0.0,
        stale_seconds: float = 0.0,
    ) -> None:
        self._engine = engine
        self.counter = counter
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        self._allowed: dict[str, tuple[float, services_db.AllowedRecipients]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> ServiceRules:
        """Redis when HERALD_REDIS_URL is set; otherwise counts in the process (one replica only); no counts
        at all with HERALD_LIMITS_ENABLED=false."""
        counter: SendCounter | None = None
        if settings.limits_enabled:
            counter = (
                RedisSendCounter(settings.redis_url, timeout=settings.redis_timeout)
                if settings.redis_url
                else LocalSendCounter()
            )
        return cls(engine, counter, settings.cache_seconds, settings.stale_seconds)

    def close(self) -> None:
        """At shutdown: the counter gives back what this process holds, so a clean stop admits no fewer."""
        if self.counter is not None:
            self.counter.close()

    def check(self, caller: Caller, notification_type: NotificationType.ValueType, to: str) -> None:
        """`to` as validated (a normalised number, an address). Raises InvalidRequest (trial mode, team key)
        or limits.LimitExceeded (Notify's 429s). `counter` None: the limits are off, trial mode still holds."""
        self.checks(caller, notification_type).check(to)

    def checks(self, caller: Caller, notification_type: NotificationType.ValueType) -> Checks:
        """The rules of one call's sends, worked out once: a batch's thousand messages share them."""
        return Checks(self, caller, notification_type)

    def restriction_problem(self, caller: Caller, notification_type: NotificationType.ValueType, to: str) -> str | None:
        """Notify's message when trial mode or a team key forbids sending to `to` (as validated), else None."""
        restriction = limits.restriction_message(caller.key.key_type, caller.service.restricted)
        if restriction is None or self.may_send_to(caller.service.id, TYPE_NAMES[notification_type], to):
            return None
        return restriction

    def take_job(self, caller: Caller, notification_type: NotificationType.ValueType, to: Sequence[str]) -> str | None:
        """A job's rows counted against the service's daily limits at once, before any is queued: Notify's
        message for the first limit the whole job would pass (nothing counted then), else None. Test keys
        and HERALD_LIMITS_ENABLED=false count nothing; the rate limit is for API calls, not a job's rows."""
        service, key_type = caller.service, caller.key.key_type
        if self.counter is None or key_type not in limits.COUNTED_KEY_TYPES or not to:
            return None
        type_name = TYPE_NAMES[notification_type]
        international = sum(1 for r in to if not recipients.is_uk_mobile(r)) if type_name == "sms" else 0
        wanted = [
            (d, len(to))
            for d in limits.daily_limits(type_name, False, service.sms_message_limit, service.email_message_limit, 0)
        ]
        if international:
            wanted.append(
                (limits.DailyLimit("international_sms", service.international_sms_message_limit), international)
            )
        today = datetime.now(UTC)
        outcome = self.counter.add([(limits.daily_count_key(service.id, d.kind, today), d.limit, n) for d, n in wanted])
        if outcome == ALLOWED:
            return None
        reached = wanted[outcome - 1][0]
        metrics.incr("daily_limit.refused", kind=reached.kind)
        return limits.daily_limit_message(reached.kind, reached.limit)

    def may_send_to(self, service_id: str, type_name: str, to: str) -> bool:
        return _allows(self.allowed_recipients(service_id), type_name, to)

    def allowed_recipients(self, service_id: str) -> services_db.AllowedRecipients:
        now = time.monotonic()
        cached = self._allowed.get(service_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            with self._engine.connect() as conn:
                allowed = services_db.allowed_recipients(conn, service_id)
        except Exception as exc:
            # The database is away: the last good copy keeps trial-mode sends flowing, for a bounded time.
            if cached is not None and is_transient(exc) and now - cached[0] < self._stale_seconds:
                metrics.incr("ingest.stale_served", what="allowed_recipients")
                return cached[1]
            raise
        if self._cache_seconds > 0:
            self._allowed[service_id] = (now + self._cache_seconds, allowed)  # bounded by the number of services
        return allowed


def _allows(allowed: services_db.AllowedRecipients, type_name: str, to: str) -> bool:
    if type_name == "sms":
        return to in allowed.numbers
    return to.lower() in allowed.emails


class Checks:
    """ServiceRules.check for one caller and type: the restriction, the bucket and the day's counts are
    worked out once per call (a batch's messages are checked in the call's day), each message's check
    only takes from the counter. Made before a batch takes its turn: what it reads, it reads here."""

    __slots__ = (
        "_allowed",
        "_bucket",
        "_counter",
        "_daily",
        "_field",
        "_key_type",
        "_rate_limit",
        "_refill",
        "_restriction",
        "_size",
        "_sms",
        "_type_name",
    )

    def __init__(self, rules: ServiceRules, caller: Caller, notification_type: NotificationType.ValueType) -> None:
        service, key_type = caller.service, caller.key.key_type
        self._key_type = key_type
        self._type_name = TYPE_NAMES[notification_type]
        self._sms = self._type_name == "sms"
        self._field = "phone_number" if self._sms else "email_address"
        self._restriction = limits.restriction_message(key_type, service.restricted)
        # A guest list loaded per call: a restricted service's batch reads it once.
        self._allowed = None if self._restriction is None else rules.allowed_recipients(service.id)
        self._counter = rules.counter
        self._rate_limit = service.rate_limit
        self._bucket = limits.bucket_key(service.id, key_type)
        self._refill = limits.refill_per_second(service.rate_limit)
        self._size = limits.bucket_size(service.rate_limit)
        # Per international-ness: the limits a message adds to, and their (key, limit) for the counter.
        self._daily: dict[bool, tuple[tuple[limits.DailyLimit, ...], list[tuple[str, int]]]] = {}
        if key_type in limits.COUNTED_KEY_TYPES:
            today = datetime.now(UTC)
            for international in (False, True) if self._sms else (False,):
                daily = limits.daily_limits(
                    self._type_name,
                    international,
                    service.sms_message_limit,
                    service.email_message_limit,
                    service.international_sms_message_limit,
                )
                self._daily[international] = (
                    daily,
                    [(limits.daily_count_key(service.id, d.kind, today), d.limit) for d in daily],
                )

    def check(self, to: str) -> None:
        refused = self.check_many((to,))[0]
        if refused is not None:
            raise refused

    def check_many(self, tos: Sequence[str]) -> list[InvalidRequest | limits.LimitExceeded | None]:
        """`check` for each recipient in order, as if one after another; each one's refusal or None. The
        counter is asked once for them all."""
        refused: list[InvalidRequest | limits.LimitExceeded | None] = [None] * len(tos)
        counted: list[int] = []  # the indexes of those the counter is asked about
        for index, to in enumerate(tos):
            if self._allowed is not None and not _allows(self._allowed, self._type_name, to):
                assert self._restriction is not None  # the guest list is read only under one
                refused[index] = InvalidRequest.one(self._field, self._restriction)
            else:
                counted.append(index)
        if self._counter is None or not counted:  # HERALD_LIMITS_ENABLED=false: no rate or daily limit
            return refused
        empty: tuple[tuple[limits.DailyLimit, ...], list[tuple[str, int]]] = ((), [])
        dailies = [self._daily.get(self._sms and not recipients.is_uk_mobile(tos[index]), empty) for index in counted]
        outcomes = self._counter.take_many(self._bucket, self._refill, self._size, [d[1] for d in dailies])
        for index, (daily, _), outcome in zip(counted, dailies, outcomes, strict=True):
            if outcome == ALLOWED:
                continue
            if outcome == RATE_LIMITED:
                metrics.incr("rate_limit.refused", key_type=self._key_type)
                refused[index] = limits.RateLimitExceeded(limits.rate_limit_message(self._key_type, self._rate_limit))
            else:
                reached = daily[outcome - 1]
                metrics.incr("daily_limit.refused", kind=reached.kind)
                refused[index] = limits.DailyLimitExceeded(limits.daily_limit_message(reached.kind, reached.limit))
        return refused
