"""The dispatcher's two jobs: persist accepted messages (db-*) and hand them to providers (send-*).

Both are safe to run twice: the insert skips ids it already has, and a send first claims the row
(created -> sending) so a redelivered message finds nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from sqlalchemy import Engine

from herald import metrics
from herald.db import notifications as notifications_db
from herald.domain import statuses as st
from herald.providers import EmailProvider, EmailRequest, ProviderError, SmsProvider, SmsRequest
from herald.queues import Delivery
from herald.queues.codec import KEY_TYPE_NAMES, KEY_TYPES, TYPE_NAMES, TYPES
from herald.queues.topology import SEND_QUEUE
from herald.v1.notifications_pb2 import KeyType, NotificationType
from herald.v1.queue_pb2 import NotificationMessage

log = logging.getLogger(__name__)


class BatchPublish(Protocol):
    def publish_batch(self, items: Sequence[tuple[str, bytes]]) -> None: ...


class Simulate(Protocol):
    def __call__(self, notification_id: str) -> None: ...


def _decode(delivery: Delivery) -> NotificationMessage | None:
    """The message, or None after dead-lettering it: one that can never be handled must not be
    requeued for ever."""
    message = NotificationMessage()
    try:
        message.ParseFromString(delivery.body)
    except DecodeError:
        message.Clear()
    if message.id and message.type in TYPE_NAMES and message.key_type in KEY_TYPE_NAMES:
        return message
    log.error("malformed message dead-lettered", extra={"queue": delivery.queue})
    delivery.reject()
    return None


def _row(m: NotificationMessage) -> dict[str, Any]:
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
        "billable_units": m.billable_units,
        "created_at": m.created_at.ToDatetime(tzinfo=UTC),
    }


class Persister:
    """db-*: one INSERT per batch, commit, publish each to send-*, then ack."""

    def __init__(self, engine: Engine, publisher: BatchPublish) -> None:
        self._engine = engine
        self._publisher = publisher

    def __call__(self, batch: Sequence[Delivery]) -> None:
        decoded = [(d, m) for d in batch if (m := _decode(d)) is not None]
        if not decoded:
            return
        try:
            self._store([m for _, m in decoded])
        except Exception:
            # One bad message must not hold up its batch: store one by one, dead-letter what fails.
            log.exception("batch insert failed, storing one by one", extra={"batch": len(decoded)})
            kept = []
            for delivery, message in decoded:
                try:
                    self._store([message])
                    kept.append((delivery, message))
                except Exception:
                    log.exception("message dead-lettered", extra={"notification_id": message.id})
                    delivery.reject()
            decoded = kept
        self._publisher.publish_batch([(SEND_QUEUE[m.type], d.body) for d, m in decoded])
        for delivery, _ in decoded:
            delivery.ack()
        metrics.incr("dispatcher.persisted", len(decoded))

    def _store(self, messages: Sequence[NotificationMessage]) -> None:
        with metrics.timed("dispatcher.insert_batch"), self._engine.begin() as conn:
            notifications_db.insert_batch(conn, [_row(m) for m in messages])


class Deliverer:
    """send-*: claim, then a provider (live) or a simulated receipt (research mode, test keys)."""

    def __init__(
        self,
        engine: Engine,
        sms_provider: SmsProvider,
        email_provider: EmailProvider,
        simulate: Simulate,
        *,
        concurrency: int = 16,
    ) -> None:
        self._engine = engine
        self._sms = sms_provider
        self._email = email_provider
        self._simulate = simulate
        # Hand-offs wait on the network, so a batch's messages go out side by side (the claim makes each
        # safe on its own). Acks stay on the consumer's thread: a kombu channel is not thread-safe.
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="hand-off")

    def __call__(self, batch: Sequence[Delivery]) -> None:
        decoded = [(d, m) for d in batch if (m := _decode(d)) is not None]
        futures = [(d, self._pool.submit(self.deliver, m)) for d, m in decoded]
        failure: BaseException | None = None
        for delivery, future in futures:
            error = future.exception()
            if error is None:
                delivery.ack()
            else:
                failure = error  # left unacked: the consumer requeues it
        if failure is not None:
            raise failure

    def deliver(self, message: NotificationMessage) -> None:
        type_name = TYPE_NAMES[message.type]
        if message.research_mode or message.key_type == KeyType.TEST:
            # Callbacks claims and completes it in one step, so a failed call here is simply retried.
            self._simulate(message.id)
            metrics.incr("dispatcher.simulated", type=type_name)
            return
        with self._engine.begin() as conn:
            claimed = notifications_db.claim_for_sending(conn, message.id, datetime.now(UTC))
        if not claimed:
            metrics.incr("dispatcher.duplicate_skipped")
            return
        try:
            with metrics.timed("clients.request-time", type=type_name):
                provider = self._hand_off(message)
        except ProviderError as exc:
            # The retry schedule is its own piece of work; until then a failed hand-off is final.
            log.warning(
                "provider refused",
                extra={"notification_id": message.id, "retryable": exc.retryable, "error": str(exc)},
            )
            metrics.incr("clients.error", type=type_name)
            with self._engine.begin() as conn:
                notifications_db.move_status(conn, message.id, st.TECHNICAL_FAILURE, datetime.now(UTC))
            return
        with self._engine.begin() as conn:
            notifications_db.record_handoff(conn, message.id, provider, datetime.now(UTC))
        metrics.incr("clients.success", provider=provider)

    def _hand_off(self, m: NotificationMessage) -> str:
        if m.type == NotificationType.SMS:
            self._sms.send_sms(SmsRequest(reference=m.id, to=m.to, body=m.body, sender=m.sender))
            return self._sms.name
        self._email.send_email(
            EmailRequest(
                reference=m.id,
                to=m.to,
                subject=m.subject,
                body=m.body,
                html=m.html,
                from_address=m.sender,
            )
        )
        return self._email.name


class Replayer:
    """Re-publishes notifications stuck in `created` to their send queue (the scheduler's safety net).

    Emails go out as plain text: the HTML part is not stored, and the body is already rendered.
    """

    def __init__(self, engine: Engine, publisher: BatchPublish, email_domain: str) -> None:
        self._engine = engine
        self._publisher = publisher
        self._email_domain = email_domain

    def __call__(self, ids: list[str]) -> int:
        with self._engine.connect() as conn:
            rows = notifications_db.for_replay(conn, ids)
        items = []
        for r in rows:
            message = NotificationMessage(
                id=str(r.id),
                service_id=str(r.service_id),
                template_id=str(r.template_id),
                template_version=r.template_version,
                type=TYPES[r.notification_type],
                to=r.to,
                body=r.body,
                subject=r.subject or "",
                reference=r.reference or "",
                key_type=KEY_TYPES[r.key_type],
                api_key_id=str(r.api_key_id or ""),
                research_mode=r.research_mode,
                billable_units=r.billable_units,
                sender=r.sms_sender if r.notification_type == "sms" else f"{r.email_from}@{self._email_domain}",
            )
            message.created_at.FromDatetime(r.created_at)
            items.append((SEND_QUEUE[message.type], message.SerializeToString()))
        if items:
            self._publisher.publish_batch(items)
        metrics.incr("scheduler.replayed", len(items))
        return len(items)
