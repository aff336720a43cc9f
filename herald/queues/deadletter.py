"""The dead-letter queue: what can never be handled is kept there, visible and replayable, never dropped.

Two ways in: the broker moves a message a consumer rejects (an undecodable body) there with an
`x-death` header naming its queue; a dispatcher publishes a single bad notification of a batch there
itself, with `x-herald-queue` and `x-herald-reason` headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from google.protobuf.message import DecodeError, Message

from herald import metrics
from herald.queues.broker import connect
from herald.queues.codec import pack
from herald.queues.consumer import Delivery
from herald.queues.topology import DEAD_LETTER, declare_all, queue
from herald.v1.queue_pb2 import NotificationBatch, ReceiptBatch

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

QUEUE_HEADER = "x-herald-queue"
REASON_HEADER = "x-herald-reason"


class BatchPublish(Protocol):
    def publish_batch(self, items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None: ...


def dead_letter(publisher: BatchPublish, from_queue: str, reason: str, items: Sequence[bytes]) -> None:
    """Keeps `items` (serialised batch items) on the dead-letter queue, confirmed, before the caller acks."""
    publisher.publish_batch([(DEAD_LETTER, pack(items))], headers={QUEUE_HEADER: from_queue, REASON_HEADER: reason})
    metrics.incr("dead_lettered", len(items), queue=from_queue, reason=reason)


@dataclass(slots=True)
class Settlement:
    """What a handler decided about a batch besides its real work: deliveries to reject (undecodable) and
    items to dead-letter. Nothing is done until `settle`, after the work committed: a batch handed over
    again during an outage must not reject twice or dead-letter the same item once per attempt."""

    rejected: list[Delivery] = field(default_factory=list)
    dead: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)

    def reject(self, delivery: Delivery) -> None:
        self.rejected.append(delivery)

    def dead_letter(self, from_queue: str, reason: str, items: Sequence[bytes]) -> None:
        self.dead.setdefault((from_queue, reason), []).extend(items)

    def well_formed(
        self, batch: Sequence[Delivery], items: Callable[[bytes], Sequence[M]], handleable: Callable[[M], bool]
    ) -> list[M]:
        """The batch's items (`items` decodes a body) that `handleable` passes, in order. A body that cannot
        be decoded is to be rejected whole, an item that can never be handled dead-lettered alone as
        malformed: neither may be requeued for ever."""
        kept: list[M] = []
        for delivery in batch:
            try:
                decoded = items(delivery.body)
            except DecodeError:
                log.error("undecodable message dead-lettered", extra={"queue": delivery.queue})
                self.reject(delivery)
                continue
            bad: list[bytes] = []
            for item in decoded:
                if handleable(item):
                    kept.append(item)
                else:
                    bad.append(item.SerializeToString())
            if bad:
                self.dead_letter(delivery.queue, "malformed", bad)
        return kept

    def settle(self, publisher: BatchPublish, batch: Sequence[Delivery]) -> None:
        """Dead letters confirmed first, then the undecodable rejected (the broker dead-letters them), then
        every other delivery acked."""
        for (from_queue, reason), items in self.dead.items():
            dead_letter(publisher, from_queue, reason, items)
        for delivery in self.rejected:
            metrics.incr("dead_lettered", queue=delivery.queue, reason="undecodable")
            delivery.reject()
        for delivery in batch:
            if not delivery.message.acknowledged:
                delivery.ack()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    queue: str  # where it came from, and where a replay sends it
    reason: str
    ids: tuple[str, ...]  # notification ids (or receipt references) inside, if it decodes
    body: bytes
    message: Any


def _origin(headers: dict[str, Any]) -> tuple[str, str]:
    if QUEUE_HEADER in headers:
        return str(headers[QUEUE_HEADER]), str(headers.get(REASON_HEADER, ""))
    deaths = headers.get("x-death") or [{}]
    return str(deaths[0].get("queue", "")), str(deaths[0].get("reason", "rejected"))


def _ids(queue_name: str, body: bytes) -> tuple[str, ...]:
    try:
        if queue_name.endswith("-callbacks"):
            receipts = ReceiptBatch()
            receipts.ParseFromString(body)
            return tuple(r.reference for r in receipts.receipts)
        batch = NotificationBatch()
        batch.ParseFromString(body)
        return tuple(m.id for m in batch.notifications)
    except DecodeError:
        return ()


@contextmanager
def browse(broker_url: str) -> Iterator[list[DeadLetter]]:
    """Every dead letter, taken without acknowledging: whatever the caller does not ack goes back to
    the queue when the block ends (the channel closes), in its order."""
    with connect(broker_url) as conn:
        declare_all(conn)
        channel = conn.channel()
        bound = queue(DEAD_LETTER)(channel)
        letters = []
        while (message := bound.get(no_ack=False)) is not None:
            origin, reason = _origin(message.headers or {})
            body = message.body if isinstance(message.body, bytes) else message.body.encode("latin-1")
            letters.append(DeadLetter(origin, reason, _ids(origin, body), body, message))
        try:
            yield letters
        finally:
            channel.close()


def replay(broker_url: str, publisher: BatchPublish, only_ids: set[str] | None = None) -> int:
    """Sends dead letters back to the queue they came from (all, or those holding one of `only_ids`);
    returns how many went. Each is acked only after its re-publish was confirmed."""
    sent = 0
    with browse(broker_url) as letters:
        for letter in letters:
            if not letter.queue or (only_ids is not None and not only_ids.intersection(letter.ids)):
                continue
            publisher.publish_batch([(letter.queue, letter.body)])
            letter.message.ack()
            sent += 1
    metrics.incr("dead_letter_replayed", sent)
    return sent
