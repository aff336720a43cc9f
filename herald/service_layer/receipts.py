"""Delivery receipts: a provider's word (or research mode's simulation) moves a notification forward.

Two halves, so that no receipt is lost because the database was away: callbacks makes each receipt
durable on its queue before the provider is answered (ReceiptIntake), and a dispatcher applies them in
batches (ReceiptApplier). A receipt for a notification not stored yet waits in receipts_pending and is
applied by the scheduler once the notification is there.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection, Engine

from herald import metrics
from herald.db import notifications as notifications_db
from herald.domain import inputs, receipts
from herald.domain import statuses as st
from herald.queues import Delivery
from herald.queues.deadletter import BatchPublish, Settlement
from herald.queues.topology import RECEIPT_QUEUE
from herald.service_layer.errors import InvalidRequest
from herald.service_layer.service_callbacks import CallbackTrigger
from herald.v1.queue_pb2 import Receipt, ReceiptBatch

log = logging.getLogger(__name__)

MAX_FIELD = 64  # a provider status or code is a short word; anything longer is not a receipt
# An early receipt whose notification never arrives (a foreign or bogus reference) is kept this long.
PENDING_KEPT = timedelta(days=7)

Publish = Callable[[str, bytes], None]


class ReceiptIntake:
    """Callbacks' half: check a receipt's shape and make it durable; the answer waits for the broker."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def report(self, provider: str, reference: str, status: str, code: str) -> str:
        if provider not in receipts.PROVIDERS:
            raise InvalidRequest.one("provider", f"provider {provider} is not one of firetext, mmg, ses")
        try:
            notification_id = inputs.canonical_uuid(reference, "reference")
            inputs.check_text(status, "status", max_length=MAX_FIELD)
            inputs.check_text(code, "code", max_length=MAX_FIELD)
        except inputs.InputError as exc:
            raise InvalidRequest.one(exc.field, exc.message) from None
        if not status:
            raise InvalidRequest.one("status", "status is required")
        # Stamped from time.time_ns(): datetime.now() and Timestamp.FromDatetime were half of this call.
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        receipt = Receipt(
            provider=provider,
            reference=notification_id,
            status=status,
            code=code,
            received_at=Timestamp(seconds=seconds, nanos=nanos),
        )
        self._publish(RECEIPT_QUEUE[provider], receipt.SerializeToString())
        metrics.incr("callback.received", provider=provider)
        return notification_id


def _canonical(r: Receipt) -> bool:
    """Whether the receipt can ever be applied; its reference made canonical (lower case) if so."""
    if r.provider not in receipts.PROVIDERS:
        return False
    try:
        r.reference = inputs.canonical_uuid(r.reference, "reference")
    except inputs.InputError:
        return False
    return True


def apply(conn: Connection, batch: Sequence[Receipt], now: datetime, finals: set[str] | None = None) -> list[Receipt]:
    """Applies receipts in their order, each checked against the transition table under the row lock;
    returns those whose notification is not stored yet. `finals` collects the notifications this batch
    moved to a final status, and those a receipt finds already in the final status it maps to (a batch
    handled again after its callbacks' publish failed, or a provider's repeat): their service's callback
    is sent (again; receivers are idempotent by id and status)."""
    # A protobuf field read makes a new str each time: each receipt's fields are read once.
    references = [r.reference for r in batch]
    current = notifications_db.statuses_for_update(conn, sorted(set(references)))
    moved: dict[str, tuple[str, str]] = {}
    early = []
    # Counted per (provider, status) and reported once per batch: a metric call per receipt cost as much
    # as the rest of the receipt's work.
    counted: Counter[tuple[str, str]] = Counter()
    delays: list[tuple[str, float]] = []
    for r, reference in zip(batch, references, strict=True):
        status = current.get(reference)
        if status is None:
            early.append(r)
            continue
        provider = r.provider
        new = receipts.map_receipt(provider, r.status, r.code, status)
        counted[provider, new] += 1
        if finals is not None and new in st.FINAL and new == status:
            finals.add(reference)
        if not st.can_move(status, new):
            log.info("receipt ignored", extra={"notification_id": reference, "from": status, "to": new})
            continue
        current[reference] = new
        moved[reference] = (new, provider)
        if new in st.FINAL:
            if finals is not None:
                finals.add(reference)
            received = r.received_at
            delays.append((provider, received.seconds + received.nanos / 1e9))
    notifications_db.apply_moves(conn, [(i, new, provider) for i, (new, provider) in moved.items()], now)
    for (provider, new), n in counted.items():
        metrics.incr("callback", n, provider=provider, status=new)
    applied_at = now.timestamp()
    for provider, received_at in delays:
        metrics.observe("receipt_delay", max(0.0, applied_at - received_at), provider=provider)
    return early


def _pending_row(r: Receipt) -> dict[str, Any]:
    return {
        "notification_id": r.reference,
        "provider": r.provider,
        "status": r.status,
        "code": r.code,
        "received_at": r.received_at.ToDatetime(tzinfo=UTC),
    }


class ReceiptApplier:
    """sms-callbacks / ses-callbacks: a batch of receipts in one transaction (one read under lock, one
    write), then ack. A database that is away raises, and the consumer keeps the batch. With `callbacks`,
    the notifications it finished are published for their services' delivery-status callbacks after the
    commit, before the ack."""

    def __init__(self, engine: Engine, publisher: BatchPublish, callbacks: CallbackTrigger | None = None) -> None:
        self._engine = engine
        self._publisher = publisher
        self._callbacks = callbacks

    @metrics.instrumented
    def __call__(self, batch: Sequence[Delivery]) -> None:
        settlement = Settlement()
        decoded = settlement.well_formed(batch, lambda body: ReceiptBatch.FromString(body).receipts, _canonical)
        if decoded:
            now = datetime.now(UTC)
            finals: set[str] | None = None if self._callbacks is None else set()
            with self._engine.begin() as conn:
                early = apply(conn, decoded, now, finals)
                notifications_db.insert_pending_receipts(conn, [_pending_row(r) for r in early])
                service_callbacks = self._callbacks.collect(conn, sorted(finals)) if self._callbacks and finals else []
            if early:
                metrics.incr("callback.early", len(early))
            if self._callbacks is not None:
                self._callbacks.publish(service_callbacks)
        settlement.settle(self._publisher, batch)


def apply_pending(
    engine: Engine, now: datetime, batch_size: int, callbacks: CallbackTrigger | None = None
) -> tuple[int, int]:
    """The scheduler's part: early receipts whose notification is stored now are applied; those kept
    past PENDING_KEPT are dropped. Returns (applied, dropped). With `callbacks`, the notifications finished
    are published for their services' callbacks just before each commit: a failed publish rolls the
    receipts back into receipts_pending for the next run (a failed commit after it repeats callbacks,
    which receivers tolerate)."""
    applied = 0
    while True:
        with engine.begin() as conn:
            rows = notifications_db.take_ready_pending_receipts(conn, batch_size)
            if not rows:
                break
            batch = []
            for row in rows:
                receipt = Receipt(provider=row.provider, reference=str(row.notification_id), status=row.status)
                receipt.code = row.code
                receipt.received_at.FromDatetime(row.received_at)
                batch.append(receipt)
            finals: set[str] = set()
            apply(conn, batch, now, finals)
            if callbacks is not None and finals:
                callbacks.publish(callbacks.collect(conn, sorted(finals)))
        applied += len(rows)
    with engine.begin() as conn:
        dropped = notifications_db.delete_pending_receipts_before(conn, now - PENDING_KEPT)
    if dropped:
        log.warning("early receipts dropped: their notification never arrived", extra={"count": dropped})
        metrics.incr("callback.pending_dropped", dropped)
    return applied, dropped
