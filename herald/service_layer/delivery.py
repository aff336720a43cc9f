"""The dispatcher's delivery jobs: persist accepted messages (db-*), hand them to providers (send-*), and
re-publish what the sweep finds due (retries, ran-out leases, never-attempted rows).

Every queue message is a batch of notifications; every step is safe to run twice for each of them: the
insert skips ids it already has, and a hand-off first claims its row for the attempt the message names,
so a redelivered or stale message finds nothing to do.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import Engine

from herald import metrics
from herald.db import notifications as notifications_db
from herald.db.errors import is_transient
from herald.domain import research, templates
from herald.domain import statuses as st
from herald.domain.retries import RetrySchedule
from herald.providers import EmailProvider, EmailRequest, ProviderError, SmsProvider, SmsRequest, send_sms_all
from herald.queues import Delivery
from herald.queues.codec import KEY_TYPE_NAMES, KEY_TYPES, TYPE_NAMES, TYPES, pack
from herald.queues.deadletter import Settlement
from herald.queues.topology import RECEIPT_QUEUE, send_lane
from herald.v1.notifications_pb2 import KeyType, NotificationType
from herald.v1.queue_pb2 import NotificationBatch, NotificationMessage, Receipt

log = logging.getLogger(__name__)

# Plain ints: a protobuf enum's attribute lookup runs Python code on every use, on the hot path.
_SMS: int = NotificationType.SMS
_TEST_KEY: int = KeyType.TEST


class BatchPublish(Protocol):
    def publish_batch(self, items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None: ...


class ProviderChoice(Protocol):
    """Which SMS provider takes the next attempt (herald.providers.rotation), and how each one did."""

    def choose(self, exclude: str | None = None) -> str: ...

    def record(self, name: str, ok: bool, seconds: float) -> None: ...


def _valid(m: NotificationMessage) -> bool:
    return len(m.id) == 36 and m.type in TYPE_NAMES and m.key_type in KEY_TYPE_NAMES


def decode(batch: Sequence[Delivery], settlement: Settlement) -> list[NotificationMessage]:
    """The batch's notifications. A body that cannot be decoded is to be dead-lettered whole; an item that
    can never be handled (no id, type or key type) alone: neither may be requeued for ever."""
    return settlement.well_formed(batch, lambda body: NotificationBatch.FromString(body).notifications, _valid)


def held_until(m: NotificationMessage, now: datetime) -> datetime | None:
    """A message scheduled for later waits on its row, not on a queue: stored with its due time as the
    next attempt, it is handed to send-* by the scheduler's sweep once due (within HERALD_SWEEP_SECONDS)."""
    if not m.HasField("scheduled_for"):
        return None
    due = m.scheduled_for.ToDatetime(tzinfo=UTC)
    return due if due > now else None


def _row(m: NotificationMessage, now: datetime) -> dict[str, Any]:
    return {
        "id": m.id,
        "service_id": m.service_id,
        "template_id": m.template_id,
        "template_version": m.template_version,
        "api_key_id": m.api_key_id or None,
        "key_type": KEY_TYPE_NAMES[m.key_type],
        "notification_type": TYPE_NAMES[m.type],
        "to": m.to,
        "personalisation": m.personalisation_json or None,
        "body": m.body,
        "subject": m.subject or None,
        "reference": m.reference or None,
        "status": st.CREATED,
        # Notify's reply_to_text: the SMS sender, or the email's reply-to address.
        "reply_to_text": (m.sender if m.type == _SMS else m.reply_to) or None,
        "unsubscribe_url": m.unsubscribe_url or None,
        "billable_units": m.billable_units,
        "rate_multiplier": m.rate_multiplier or 1.0,
        "created_at": m.created_at.ToDatetime(tzinfo=UTC),
        "job_id": m.job_id or None,
        "job_row_number": m.job_row_number or None,
        "next_attempt_at": held_until(m, now),
        "scheduled_for": m.scheduled_for.ToDatetime(tzinfo=UTC) if m.HasField("scheduled_for") else None,
        "request_hash": m.request_hash or None,
    }


def _by_send_queue(messages: Iterable[NotificationMessage]) -> list[tuple[str, bytes]]:
    grouped: dict[str, list[bytes]] = {}
    for m in messages:
        grouped.setdefault(send_lane(m.type, m.job_id), []).append(m.SerializeToString())
    return [(queue, pack(items)) for queue, items in grouped.items()]


class Persister:
    """db-*: one INSERT per batch, commit, publish the batch on to send-*, then ack.

    A database that is away raises (the consumer keeps the batch and tries again); a notification the
    database refuses by a constraint is dead-lettered alone, after its neighbours were stored.
    """

    def __init__(self, engine: Engine, publisher: BatchPublish) -> None:
        self._engine = engine
        self._publisher = publisher

    @metrics.instrumented
    def __call__(self, batch: Sequence[Delivery]) -> None:
        settlement = Settlement()
        messages = decode(batch, settlement)
        now = datetime.now(UTC)
        try:
            stored = self._store(messages, now)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("batch insert refused, storing one by one", extra={"error": type(exc).__name__})
            stored = self._store_each(batch[0].queue, messages, now, settlement)
        messages = self._first_copies(messages, stored, now)
        ready = [m for m in messages if held_until(m, now) is None]
        if ready:
            self._publisher.publish_batch(_by_send_queue(ready))
        settlement.settle(self._publisher, batch)
        metrics.incr("dispatcher.persisted", len(messages))
        if len(ready) < len(messages):
            metrics.incr("dispatcher.scheduled", len(messages) - len(ready))

    def _store(self, messages: Sequence[NotificationMessage], now: datetime) -> set[str]:
        if not messages:
            return set()
        with metrics.timed("dispatcher.insert_batch"), self._engine.begin() as conn:
            return notifications_db.insert_batch(conn, [_row(m, now) for m in messages])

    def _first_copies(
        self, messages: Sequence[NotificationMessage], stored: set[str], now: datetime
    ) -> list[NotificationMessage]:
        """The messages whose rows were stored now, each once. A copy of a row stored before (redelivered
        after a crash, or an idempotency key sent again with another body) is not forwarded as it came:
        its row, if not yet attempted, goes to the sweep, which publishes it as stored, so what is sent is
        always what GetNotification, callbacks and billing show."""
        first: list[NotificationMessage] = []
        repeated: list[NotificationMessage] = []
        for message in messages:
            if message.id in stored:
                stored.discard(message.id)  # a second copy in the same batch is a repeat too
                first.append(message)
            else:
                repeated.append(message)
        if repeated:
            # A keyed copy whose request differs from its stored row's is an idempotency key reused with
            # another request before the first was stored, which ingest could not check: it is counted.
            hashed = [m for m in repeated if m.request_hash]
            with self._engine.begin() as conn:
                notifications_db.due_now(conn, [m.id for m in repeated], now)
                known = notifications_db.request_hashes(conn, [m.id for m in hashed]) if hashed else {}
            metrics.incr("dispatcher.repeated", len(repeated))
            mismatched = sum(1 for m in hashed if known.get(m.id) not in (None, m.request_hash))
            if mismatched:
                metrics.incr("dispatcher.idempotency_mismatch", mismatched)
        return first

    def _store_each(
        self, queue: str, messages: Sequence[NotificationMessage], now: datetime, settlement: Settlement
    ) -> set[str]:
        """As _store, one message at a time: those the database refuses are dead-lettered."""
        stored: set[str] = set()
        for message in messages:
            try:
                stored |= self._store([message], now)
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.error(
                    "notification refused by the database, dead-lettered",
                    extra={"notification_id": message.id, "error": type(exc).__name__},
                )
                settlement.dead_letter(queue, "refused", [message.SerializeToString()])
        return stored


@dataclass(slots=True)  # not frozen: made once per hand-off, and frozen costs four times as much
class _Attempt:
    id: str
    provider: str
    error: str  # empty: handed off
    retryable: bool
    ambiguous: bool  # the provider may have it: its answer was lost


class Deliverer:
    """send-*: claim the batch's rows, then a provider (live) or a simulated receipt (research mode, test
    keys). A failed hand-off waits on its row for the retry schedule; the scheduler's sweep re-publishes it."""

    def __init__(
        self,
        engine: Engine,
        publisher: BatchPublish,
        sms_providers: Mapping[str, SmsProvider],
        sms_choice: ProviderChoice,
        email_provider: EmailProvider | None,  # None: the process consumes SMS queues only
        *,
        schedule: RetrySchedule,
        lease_seconds: float,
        concurrency: int = 16,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._sms = dict(sms_providers)
        self._choice = sms_choice
        self._email = email_provider
        self._schedule = schedule
        self._lease = timedelta(seconds=lease_seconds)
        self._now = now
        # Hand-offs wait on the network, so a batch's messages go out side by side (each claim makes its
        # message safe on its own): SMS from the consumer's thread, over non-blocking connections; emails
        # on these threads (boto3 blocks). Acks stay on the consumer's thread: a kombu channel is not
        # thread-safe.
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="hand-off")
        self._concurrency = concurrency

    @metrics.instrumented
    def __call__(self, batch: Sequence[Delivery]) -> None:
        settlement = Settlement()
        # Copies of one message (an idempotency key's repeats, a redelivery) are handed off once.
        messages = list({(m.id, m.attempt): m for m in decode(batch, settlement)}.values())
        simulated = [m for m in messages if m.research_mode or m.key_type == _TEST_KEY]
        live = [m for m in messages if not (m.research_mode or m.key_type == _TEST_KEY)]
        if simulated:
            self._simulate(simulated)
        if live:
            self._deliver(live)
        settlement.settle(self._publisher, batch)

    def _simulate(self, messages: Sequence[NotificationMessage]) -> None:
        """The claim, the simulated hand-off and the receipts (the seed's outcomes by recipient) go
        together: the receipts are confirmed on the receipts queue before the claim commits, so a
        failure anywhere leaves the row claimable again."""
        now = self._now()
        with self._engine.begin() as conn:
            claimed = notifications_db.claim_simulated(
                conn, [(m.id, m.attempt) for m in messages], now, research.SMS_PROVIDER, research.EMAIL_PROVIDER
            )
            receipts: dict[str, list[bytes]] = {}
            for m in messages:
                if (m.id, m.attempt) not in claimed:
                    continue
                if m.type == _SMS:
                    fake = research.simulated_sms_receipt(m.to)
                else:
                    fake = research.simulated_email_receipt(m.to)
                receipt = Receipt(provider=fake.provider, reference=m.id, status=fake.status, code=fake.code)
                receipt.received_at.FromDatetime(now)
                receipts.setdefault(RECEIPT_QUEUE[fake.provider], []).append(receipt.SerializeToString())
            if receipts:
                self._publisher.publish_batch([(queue, pack(items)) for queue, items in receipts.items()])
        metrics.incr("dispatcher.simulated", len(claimed))
        metrics.incr("dispatcher.duplicate_skipped", len(messages) - len(claimed))

    def _provider_for(self, m: NotificationMessage) -> str:
        if m.type != _SMS:
            if self._email is None:
                # send_queue routes by type: an email here means a queue given to the wrong process.
                raise ValueError("an email reached a dispatcher without an email provider")
            return self._email.name
        if m.reuse_provider and m.last_provider in self._sms:
            return m.last_provider
        return self._choice.choose(exclude=m.last_provider or None)

    def _deliver(self, messages: Sequence[NotificationMessage]) -> None:
        now = self._now()
        chosen = {m.id: self._provider_for(m) for m in messages}
        with self._engine.begin() as conn:
            claimed = notifications_db.claim(
                conn, [(m.id, m.attempt, chosen[m.id]) for m in messages], now, now + self._lease
            )
        mine = [m for m in messages if (m.id, m.attempt) in claimed]
        metrics.incr("dispatcher.duplicate_skipped", len(messages) - len(mine))
        attempts = self._attempt_all(mine, chosen)
        done = self._now()
        handed = [(a.id, a.provider) for a in attempts if not a.error]
        retries: list[tuple[str, str, bool, datetime]] = []
        failures: list[tuple[str, str]] = []
        for m, a in zip(mine, attempts, strict=True):
            if not a.error:
                continue
            delay = self._schedule.delay_after(m.attempt + 1) if a.retryable else None
            if delay is None:
                failures.append((a.id, a.error))
            else:
                retries.append((a.id, a.error, a.ambiguous, done + timedelta(seconds=delay)))
        self._record(handed, retries, failures, done)
        outcomes = Counter(
            (a.provider, "ok" if not a.error else ("retryable" if a.retryable else "failed")) for a in attempts
        )
        for (provider, outcome), n in outcomes.items():
            metrics.incr("provider_handoffs", n, provider=provider, outcome=outcome)
        # Seconds since the epoch from the Timestamp's fields: ToDatetime costs more than the rest of this.
        done_at = done.timestamp()
        for m, a in zip(mine, attempts, strict=True):
            if not a.error:
                metrics.observe("handoff_delay", done_at - m.created_at.seconds - m.created_at.nanos / 1e9)
        if failures:
            metrics.incr("notifications.technical_failure", len(failures))

    def _attempt_all(self, messages: Sequence[NotificationMessage], chosen: Mapping[str, str]) -> list[_Attempt]:
        """Every hand-off, side by side: emails on the hand-off threads (boto3 blocks), while SMS go out
        from this thread, all at once over non-blocking connections (herald.providers.send_sms_all)."""
        results: list[_Attempt | None] = [None] * len(messages)
        emails = deque((i, m) for i, m in enumerate(messages) if m.type != _SMS)

        def work() -> None:
            while True:
                try:
                    index, m = emails.popleft()
                except IndexError:
                    return
                results[index] = self._attempt_email(m, chosen[m.id])

        workers = [self._pool.submit(work) for _ in range(min(len(emails), self._concurrency))]
        sms = [i for i, m in enumerate(messages) if m.type == _SMS]
        if sms:
            for index, attempt in zip(sms, self._attempt_sms([messages[i] for i in sms], chosen), strict=True):
                results[index] = attempt
        for worker in workers:
            worker.result()
        return [r for r in results if r is not None]

    def _attempt_sms(self, messages: Sequence[NotificationMessage], chosen: Mapping[str, str]) -> list[_Attempt]:
        names = [chosen[m.id] for m in messages]
        handoffs = [
            (self._sms[name], SmsRequest(reference=m.id, to=m.to, body=m.body, sender=m.sender))
            for m, name in zip(messages, names, strict=True)
        ]
        attempts = []
        for m, name, (outcome, seconds) in zip(messages, names, send_sms_all(handoffs, self._concurrency), strict=True):
            ok = not isinstance(outcome, ProviderError)
            self._choice.record(name, ok, seconds)
            metrics.observe("clients.request-time", seconds, provider=name)
            if isinstance(outcome, ProviderError):
                attempts.append(self._failed(m, name, outcome))
            else:
                attempts.append(_Attempt(m.id, name, "", False, False))
        return attempts

    def _record(
        self,
        handed: list[tuple[str, str]],
        retries: list[tuple[str, str, bool, datetime]],
        failures: list[tuple[str, str]],
        now: datetime,
    ) -> None:
        """The outcomes are the provider's word: keep trying to write them through a short database
        outage (up to the lease), rather than leave the rows to be re-driven."""
        give_up = time.monotonic() + self._lease.total_seconds()
        pause = 0.1
        while True:
            try:
                with self._engine.begin() as conn:
                    notifications_db.record_handoffs(conn, handed, now)
                    notifications_db.schedule_retries(conn, retries, now)
                    notifications_db.record_failures(conn, failures, now)
                return
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() + pause > give_up:
                    raise
                log.warning("database unavailable, outcomes kept in hand", extra={"batch": len(handed)})
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _attempt_email(self, m: NotificationMessage, name: str) -> _Attempt:
        assert self._email is not None  # _provider_for chose it
        # Ingest leaves both parts to the hand-off, unless the body alone cannot make them.
        parts = templates.EmailParts(m.html, m.text) if m.html else templates.email_parts(m.body)
        try:
            with metrics.timed("clients.request-time", provider=name):
                self._email.send_email(
                    EmailRequest(
                        reference=m.id,
                        to=m.to,
                        subject=m.subject,
                        body=parts.text,
                        html=parts.html,
                        from_address=m.sender,
                        reply_to=m.reply_to or None,
                        unsubscribe_url=m.unsubscribe_url or None,
                    )
                )
        except ProviderError as exc:
            return self._failed(m, name, exc)
        return _Attempt(m.id, name, "", False, False)

    def _failed(self, m: NotificationMessage, name: str, exc: ProviderError) -> _Attempt:
        # The error's text names the provider and an HTTP status or code, never the recipient.
        log.warning(
            "hand-off failed",
            extra={"notification_id": m.id, "provider": name, "retryable": exc.retryable, "error": str(exc)},
        )
        metrics.incr("clients.error", provider=name)
        return _Attempt(m.id, name, str(exc)[:100], exc.retryable, exc.ambiguous)


class Republisher:
    """Builds send-* messages again from stored rows for the scheduler's sweeps (retries that fell due,
    leases that ran out, rows never attempted). An email's HTML is not stored: it is rendered again from
    the template version and personalisation the row recorded."""

    def __init__(self, publisher: BatchPublish, email_domain: str) -> None:
        self._publisher = publisher
        self._email_domain = email_domain

    @metrics.instrumented
    def __call__(self, rows: Sequence[Any]) -> int:
        messages = [self._message(r) for r in rows]
        if messages:
            self._publisher.publish_batch(_by_send_queue(messages))
        redriven = sum(1 for r in rows if r.attempts > 0 and r.last_error is None)
        metrics.incr("scheduler.republished", len(messages))
        metrics.incr("send_redrives", redriven)
        return len(messages)

    def _message(self, r: Any) -> NotificationMessage:
        is_sms = r.notification_type == "sms"
        message = NotificationMessage(
            id=str(r.id),
            service_id=str(r.service_id),
            template_id=str(r.template_id),
            template_version=r.template_version,
            type=TYPES[r.notification_type],
            to=r.to,
            body=r.body,
            subject=r.subject or "",
            reply_to="" if is_sms else r.reply_to_text or "",
            unsubscribe_url=r.unsubscribe_url or "",
            reference=r.reference or "",
            key_type=KEY_TYPES[r.key_type],
            api_key_id=str(r.api_key_id or ""),
            research_mode=r.research_mode,
            billable_units=r.billable_units,
            sender=(r.reply_to_text or r.sms_sender) if is_sms else f"{r.email_from}@{self._email_domain}",
            attempt=r.attempts,
            last_provider=r.last_provider or "",
            reuse_provider=r.sticky_provider,
            rate_multiplier=r.rate_multiplier,
            job_id=str(r.job_id or ""),
            job_row_number=r.job_row_number or 0,
        )
        message.created_at.FromDatetime(r.created_at)
        if not is_sms:
            personalisation = orjson.loads(r.personalisation) if r.personalisation else {}
            try:
                # Rendered again only for what the hand-off cannot make from the body (templates.email_parts).
                email = templates.render_email(
                    r.template_subject or "", r.template_content, personalisation, html=False
                )
                message.html, message.text = email.html, email.plain_text
            except templates.TemplateError:
                log.warning(
                    "stored email no longer renders, its parts made from the stored body",
                    extra={"notification_id": str(r.id)},
                )
        return message
