"""BatchConsumer's batch bounds on a real RabbitMQ: a count of broker messages, and their bytes (a broker
message is itself a batch of notifications, so a count alone would not bound a handler call's memory)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from kombu import Connection, Producer
from sqlalchemy import Engine

from herald.queues import BatchConsumer, Delivery
from herald.queues.topology import EXCHANGE
from herald.settings import Settings
from services.dispatcher import app as dispatcher_app
from tests.support import free_port


def _consume(broker_url: str, bodies: Sequence[bytes], batch_size: int, max_batch_bytes: int) -> list[int]:
    """Publishes `bodies` on db-sms, then consumes them all with the given bounds; the batch sizes seen."""
    with Connection(broker_url) as conn:
        producer = Producer(conn.default_channel, exchange=EXCHANGE)
        for body in bodies:
            producer.publish(body, routing_key="db-sms", delivery_mode=2)
    sizes: list[int] = []
    done = threading.Event()

    def handle(batch: Sequence[Delivery]) -> None:
        sizes.append(len(batch))
        for delivery in batch:
            delivery.ack()
        if sum(sizes) == len(bodies):
            done.set()

    with Connection(broker_url) as conn:
        # A long linger: only the bounds under test end a batch before the last message.
        consumer = BatchConsumer(
            conn, ["db-sms"], handle, batch_size=batch_size, max_batch_bytes=max_batch_bytes, linger=5.0
        )
        thread = threading.Thread(target=consumer.run_until_stopped, daemon=True)
        thread.start()
        assert done.wait(30), f"consumed {sum(sizes)} of {len(bodies)}"
        consumer.should_stop = True
        thread.join(10)
    return sizes


def test_a_batch_ends_once_its_bodies_reach_the_byte_bound(clean_broker: str) -> None:
    sizes = _consume(clean_broker, [b"x" * 400] * 7, batch_size=100, max_batch_bytes=1000)
    assert sizes[:2] == [3, 3]  # 1,200 bytes each: the bound is reached on the third
    assert sum(sizes) == 7


def test_a_batch_ends_at_its_message_count(clean_broker: str) -> None:
    sizes = _consume(clean_broker, [b"x"] * 5, batch_size=2, max_batch_bytes=1 << 20)
    assert sizes[:2] == [2, 2]
    assert sum(sizes) == 5


def test_a_busy_send_dispatcher_leaves_the_rest_of_the_queue_to_another(
    clean_broker: str, settings: Settings, engine: Engine
) -> None:
    """A send dispatcher hands a batch off whole before taking the next, so what it holds beyond that
    batch would wait while a second dispatcher idles (goal 4 of issue 7): it holds only its batch."""
    s = replace(settings, broker_url=clean_broker, dispatcher_address=f"127.0.0.1:{free_port()}")
    built = dispatcher_app.build(s, engine, ["send-sms"])
    built.server.stop(0)
    (bounds,) = [(c.batch_size, c.prefetch) for c in built.consumers]
    with Connection(clean_broker) as conn:
        producer = Producer(conn.default_channel, exchange=EXCHANGE)
        for _ in range(12):
            producer.publish(b"x", routing_key="send-sms", delivery_mode=2)
    busy, release, rest = threading.Event(), threading.Event(), threading.Event()
    held: list[int] = []
    taken: list[int] = []

    def slow(batch: Sequence[Delivery]) -> None:  # the first dispatcher, handing off for a long time
        held.append(len(batch))
        busy.set()
        release.wait(30)
        for delivery in batch:
            delivery.ack()

    def quick(batch: Sequence[Delivery]) -> None:
        taken.append(len(batch))
        for delivery in batch:
            delivery.ack()
        if held[0] + sum(taken) == 12:
            rest.set()

    with Connection(clean_broker) as first, Connection(clean_broker) as second:
        batch_size, prefetch = bounds
        consumers = [
            BatchConsumer(conn, ["send-sms"], handler, batch_size=batch_size, prefetch=prefetch)
            for conn, handler in ((first, slow), (second, quick))
        ]
        threads = [threading.Thread(target=c.run_until_stopped, daemon=True) for c in consumers]
        threads[0].start()
        assert busy.wait(30)
        threads[1].start()
        try:
            assert rest.wait(30), f"the first holds {held}, the second took {taken} of 12"
        finally:
            release.set()
            for consumer in consumers:
                consumer.should_stop = True
            for thread in threads:
                thread.join(10)
    assert held[0] == batch_size
