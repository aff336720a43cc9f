"""Publishing that returns only once the broker has confirmed every message of a batch.

Confirms are awaited per batch, not per message: one round trip per message costs an order of
magnitude (brief: 1,200 vs 14,400 msg/s). PublisherThread groups concurrent callers' messages
into such batches, so each gRPC handler waits for one shared confirm.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from kombu import Connection, Producer

from herald.queues.topology import CONTENT_TYPE, EXCHANGE, declare_all

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    pass


class ConfirmingPublisher:
    """Owns one connection and channel; use from one thread."""

    def __init__(self, broker_url: str, *, confirm_timeout: float = 10.0) -> None:
        self._url = broker_url
        self._timeout = confirm_timeout
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._confirms = False
        self._outstanding: set[int] = set()
        self._nacked = False
        self._next_tag = 1

    def _connect(self) -> Producer:
        if self._producer is not None:
            return self._producer
        conn = Connection(self._url)
        conn.ensure_connection(max_retries=3)
        declare_all(conn)
        channel = conn.channel()
        # In-process (memory) transport has no confirms: a put into the process's queue is final.
        self._confirms = conn.transport.driver_type == "amqp"
        if self._confirms:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
        self._conn, self._producer, self._next_tag = conn, Producer(channel, exchange=EXCHANGE), 1
        return self._producer

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._outstanding = {t for t in self._outstanding if t > tag}
        else:
            self._outstanding.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked = True
        self._on_ack(tag, multiple)

    def publish_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish (routing key, body) pairs; raises PublishFailed unless all were confirmed."""
        try:
            self._publish(items)
        except PublishFailed:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise PublishFailed(str(exc)) from exc

    def _publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        producer = self._connect()
        self._nacked = False
        for routing_key, body in items:
            producer.publish(
                body,
                routing_key=routing_key,
                content_type=CONTENT_TYPE,
                content_encoding="binary",
                delivery_mode=2,
            )
            if self._confirms:
                self._outstanding.add(self._next_tag)
                self._next_tag += 1
        assert self._conn is not None
        while self._outstanding:
            self._conn.drain_events(timeout=self._timeout)
        if self._nacked:
            raise PublishFailed("the broker refused a message")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.release()
            except Exception:  # the connection may already be broken; closing is best effort
                log.debug("error closing publisher connection", exc_info=True)
        self._conn, self._producer = None, None
        self._outstanding.clear()


class PublisherThread:
    """Serialises many threads' publishes through one confirming publisher, batching as it goes."""

    def __init__(self, broker_url: str, *, max_batch: int = 1000) -> None:
        self._publisher = ConfirmingPublisher(broker_url)
        self._max_batch = max_batch
        self._inbox: queue_mod.Queue[tuple[str, bytes, Future[None]] | None] = queue_mod.Queue()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def publish(self, routing_key: str, body: bytes, timeout: float = 15.0) -> None:
        future: Future[None] = Future()
        self._inbox.put((routing_key, body, future))
        try:
            future.result(timeout=timeout)
        except TimeoutError:
            raise PublishFailed(f"no confirm within {timeout}s") from None

    def _run(self) -> None:
        while True:
            first = self._inbox.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._inbox.get_nowait()
                except queue_mod.Empty:
                    break
                if item is None:
                    self._inbox.put(None)
                    break
                batch.append(item)
            self._flush(batch)
        self._publisher.close()

    def _flush(self, batch: list[tuple[str, bytes, Future[None]]]) -> None:
        items = [(key, body) for key, body, _ in batch]
        error: Exception | None = None
        for _attempt in range(2):  # one reconnect: a broker restart should not fail callers needlessly
            try:
                self._publisher.publish_batch(items)
                error = None
                break
            except PublishFailed as exc:
                error = exc
                log.warning("publish failed, reconnecting", extra={"batch": len(items)})
        for _, _, future in batch:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def close(self, timeout: float = 10.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout)
