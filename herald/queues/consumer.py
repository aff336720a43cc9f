"""Batch consumption on kombu's ConsumerMixin: its connection lifecycle and reconnects, plus batching.

Messages are collected until `batch_size` have arrived, their bodies reach `max_batch_bytes`, or the
oldest has waited `linger` seconds, then handed to the handler together. The byte bound matters because
a broker message is itself a batch (one SendSmsBatch call's 1,000 notifications, say): counted in
messages alone, one handler call could hold hundreds of thousands of notifications in memory.

The handler acks or rejects each delivery; anything it leaves unacknowledged when the process dies is
redelivered by the broker.

An outage is not poison: when the handler fails because a dependency is away (`is_transient`), the
batch is kept in hand, unacknowledged, and handed over again with a growing pause until it goes
through or the consumer is asked to stop (then the broker redelivers it to whoever runs next).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

from kombu import Connection, Consumer
from kombu.mixins import ConsumerMixin

from herald import metrics
from herald.queues.publisher import PUBLISHED_AT
from herald.queues.topology import queue

log = logging.getLogger(__name__)

# How long an idle consumer waits for events before looking at should_stop and heartbeats again.
IDLE_WAIT = 0.5
# About 3,000 SMS notifications: one multi-row INSERT's worth, a few MB of memory once decoded.
MAX_BATCH_BYTES = 1 << 20


@dataclass(slots=True)
class Delivery:
    queue: str
    body: bytes
    redelivered: bool
    message: Any
    headers: dict[str, Any]

    def ack(self) -> None:
        self.message.ack()

    def reject(self) -> None:
        """Dead-letter it: the message is kept, not dropped."""
        self.message.reject(requeue=False)

    def requeue(self) -> None:
        self.message.requeue()


BatchHandler = Callable[[Sequence[Delivery]], None]


class BatchConsumer(ConsumerMixin):  # type: ignore[misc]
    def __init__(
        self,
        connection: Connection,
        queues: Sequence[str],
        handler: BatchHandler,
        *,
        batch_size: int = 500,
        linger: float = 0.005,
        prefetch: int = 1000,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        is_transient: Callable[[BaseException], bool] = lambda error: False,
        max_backoff: float = 5.0,
    ) -> None:
        self.connection = connection
        self.is_transient = is_transient
        self.max_backoff = max_backoff
        self.queue_names = list(queues)
        self.handler = handler
        self.batch_size = batch_size
        self.linger = linger
        self.prefetch = prefetch
        self.max_batch_bytes = max_batch_bytes
        self.error_backoff = 1.0
        self._buffer: list[Delivery] = []
        self._buffered_bytes = 0
        self._first_at = 0.0

    def get_consumers(self, consumer_cls: type[Consumer], channel: Any) -> list[Consumer]:
        return [
            consumer_cls(
                queues=[queue(name) for name in self.queue_names],
                on_message=self._on_message,
                prefetch_count=self.prefetch,
            )
        ]

    def _on_message(self, message: Any) -> None:
        body = message.body
        if not isinstance(body, bytes):
            body = body.encode("latin-1")
        if not self._buffer:
            self._first_at = time.monotonic()
        info = message.delivery_info
        queue_name = info.get("routing_key", "")
        headers = message.headers or {}
        published = headers.get(PUBLISHED_AT)
        if isinstance(published, float):
            metrics.observe("queue_wait", max(0.0, time.time() - published), queue=queue_name)
        self._buffer.append(Delivery(queue_name, body, bool(info.get("redelivered")), message, headers))
        self._buffered_bytes += len(body)
        if len(self._buffer) >= self.batch_size or self._buffered_bytes >= self.max_batch_bytes:
            self._flush()

    def on_iteration(self) -> None:
        if self._buffer and time.monotonic() - self._first_at >= self.linger:
            self._flush()

    def on_consume_end(self, connection: Connection, channel: Any) -> None:
        # Finish what is in hand before a graceful stop; the broker requeues anything unacked.
        self._flush()

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        log.warning("broker connection lost, retrying", extra={"retry_in": interval, "error": str(exc)})
        self._buffer.clear()  # unacked deliveries of a dead channel come back by themselves
        self._buffered_bytes = 0

    def _flush(self) -> None:
        batch, self._buffer, self._buffered_bytes = self._buffer, [], 0
        if not batch:
            return
        pause = self.error_backoff / 10
        while True:
            try:
                self.handler(batch)
                return
            except Exception as exc:
                if not self.is_transient(exc):
                    # Not an outage: give back what is left, so the handler sees it again as a redelivery.
                    log.exception("batch failed, requeueing", extra={"batch": len(batch)})
                    for delivery in batch:
                        if not delivery.message.acknowledged:
                            delivery.requeue()
                    time.sleep(self.error_backoff)
                    return
                log.warning(
                    "dependency unavailable, keeping the batch",
                    extra={"batch": len(batch), "error": type(exc).__name__, "retry_in": pause},
                )
            if self.should_stop:
                return  # unacknowledged: the broker hands it to the next consumer
            time.sleep(pause)
            pause = min(pause * 2, self.max_backoff)

    def consume(
        self, limit: int | None = None, timeout: float | None = None, safety_interval: float = 1, **kwargs: Any
    ) -> Iterator[None]:
        """kombu's ConsumerMixin.consume, but waiting `linger` for events only while a batch is in hand:
        an idle consumer waits IDLE_WAIT (a message still wakes it at once), where waking every `linger`
        cost an idle dispatcher about 5% of a core per lane."""
        elapsed = 0.0
        with self.consumer_context(**kwargs) as (conn, _channel, _consumers):
            for _ in range(limit) if limit else count():
                if self.should_stop:
                    break
                self.on_iteration()
                wait = self.linger if self._buffer else IDLE_WAIT
                try:
                    conn.drain_events(timeout=wait)
                except TimeoutError:
                    conn.heartbeat_check()
                    elapsed += wait
                    if timeout and elapsed >= timeout:
                        raise
                except OSError:
                    if not self.should_stop:
                        raise
                else:
                    yield
                    elapsed = 0.0

    def run_until_stopped(self) -> None:
        self.run()
