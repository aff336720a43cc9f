"""Received text messages (Notify's inbound SMS): a provider's inbound message in, kept, listed, and deleted
after the service's SMS retention.

Two halves, as receipts have, so that no message is lost because the database was away: callbacks checks a
message's shape and makes it durable on inbound-sms before the provider is answered (InboundIntake), and a
dispatcher stores each batch against the services that own the numbers (InboundStorer). A message to a
number no service owns is dropped there and counted: Notify answers the provider OK and drops it too. A
stored text whose service has an inbound-SMS callback is queued for it (service_callbacks).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Engine

from herald import metrics
from herald.db import inbound as inbound_db
from herald.domain import inbound, inputs
from herald.queues import Delivery
from herald.queues.deadletter import BatchPublish, Settlement
from herald.queues.topology import INBOUND_QUEUE
from herald.service_layer.auth import Caller
from herald.service_layer.errors import InvalidRequest
from herald.service_layer.service_callbacks import CallbackTrigger
from herald.v1.queue_pb2 import InboundSms, InboundSmsBatch

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 250  # Notify's API_PAGE_SIZE

Publish = Callable[[str, bytes], None]


class InboundIntake:
    """Callbacks' half: check the message and make it durable; the answer waits for the broker."""

    def __init__(self, publish: Publish, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._publish = publish
        self._now = now

    def receive(
        self,
        provider: str,
        notify_number: str,
        user_number: str,
        content: str,
        provider_reference: str = "",
        provider_date: str = "",
    ) -> str:
        """Returns the received text's id, once it is on the queue."""
        if provider not in inbound.PROVIDERS:
            raise InvalidRequest.one("provider", f"provider {provider} is not one of {', '.join(inbound.PROVIDERS)}")
        try:
            text = InboundSms(
                id=str(uuid.uuid4()),
                provider=provider,
                notify_number=inbound.phone_number(notify_number, "notify_number"),
                user_number=inbound.phone_number(user_number, "user_number"),
                content=inbound.content(content),
                provider_reference=inbound.provider_reference(provider_reference),
            )
            arrived = inbound.provider_date(provider_date)
        except inbound.InboundError as exc:
            raise InvalidRequest.one(exc.field, exc.message) from None
        if arrived is not None:
            text.provider_date.FromDatetime(arrived.astimezone(UTC))
        text.received_at.FromDatetime(self._now())
        self._publish(INBOUND_QUEUE, text.SerializeToString())
        metrics.incr("inbound.received", provider=provider)
        return text.id


def _row(text: InboundSms, service_id: str) -> dict[str, Any]:
    return {
        "id": text.id,
        "service_id": service_id,
        "notify_number": text.notify_number,
        "user_number": text.user_number,
        "content": text.content,
        "provider_date": text.provider_date.ToDatetime(tzinfo=UTC) if text.HasField("provider_date") else None,
        "provider_reference": text.provider_reference or None,
        "provider": text.provider,
        "created_at": text.received_at.ToDatetime(tzinfo=UTC),
    }


def _storable(text: InboundSms) -> bool:
    """Whether the text can ever be stored: what the intake guaranteed, checked again because anything can
    reach a queue (a replayed dead letter, another publisher)."""
    try:
        inputs.canonical_uuid(text.id, "id")
        for value, field in ((text.notify_number, "notify_number"), (text.user_number, "user_number")):
            inputs.check_text(value, field, max_length=inbound.MAX_NUMBER_LENGTH)
        inputs.check_text(text.content, "content", max_length=inbound.MAX_CONTENT_LENGTH)
        inputs.check_text(text.provider_reference, "provider_reference", max_length=inbound.MAX_REFERENCE_LENGTH)
    except inputs.InputError:
        return False
    return text.provider in inbound.PROVIDERS and bool(text.notify_number) and text.HasField("received_at")


class InboundStorer:
    """inbound-sms: a batch of received texts stored in one transaction (one read of the numbers' owners,
    one insert), then acked. A database that is away raises, and the consumer keeps the batch. With
    `callbacks`, each text of the batch whose service has an inbound-SMS callback is published for it after
    the commit, before the ack: whether it was stored now or by an earlier handling of the batch, so a
    batch handled again after its publish failed (or a crash before the ack) queues its callbacks again
    rather than losing them (at least once: receivers are idempotent by id)."""

    def __init__(self, engine: Engine, publisher: BatchPublish, callbacks: CallbackTrigger | None = None) -> None:
        self._engine = engine
        self._publisher = publisher
        self._callbacks = callbacks

    @metrics.instrumented
    def __call__(self, batch: Sequence[Delivery]) -> None:
        settlement = Settlement()
        texts = settlement.well_formed(batch, lambda body: InboundSmsBatch.FromString(body).texts, _storable)
        if texts:
            with self._engine.begin() as conn:
                owners = inbound_db.services_for_numbers(conn, [t.notify_number for t in texts])
                owned = [(owners[t.notify_number], t) for t in texts if t.notify_number in owners]
                inbound_db.insert_texts(conn, [_row(t, service_id) for service_id, t in owned])
                callbacks = self._callbacks.collect_inbound(conn, owned) if self._callbacks else []
            if self._callbacks is not None:
                # Raises PublishFailed: the batch is handled again (its inserts do nothing then).
                self._callbacks.publish(callbacks)
            for text in texts:
                if text.notify_number in owners:
                    metrics.incr("inbound.stored", provider=text.provider)
                else:
                    # Never the number itself in a log: it is someone's phone number.
                    metrics.incr("inbound.unknown_number", provider=text.provider)
                    log.warning("received text dropped: no service has its number", extra={"inbound_id": text.id})
        settlement.settle(self._publisher, batch)


def list_received_texts(engine: Engine, caller: Caller, older_than: str = "") -> list[inbound_db.ReceivedTextRow]:
    """The caller's service's received texts, newest first, PAGE_SIZE at most (any key type: Notify)."""
    try:
        older_than = inputs.canonical_uuid(older_than, "older_than") if older_than else ""
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None
    with engine.connect() as conn:
        return inbound_db.page(conn, caller.service.id, older_than, PAGE_SIZE)
