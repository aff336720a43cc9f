"""BatchConsumer's batch bounds on a real RabbitMQ: a count of broker messages, and their bytes (a broker
message is itself a batch of notifications, so a count alone would not bound a handler call's memory)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from kombu import Connection, Producer

from herald.queues import BatchConsumer, Delivery
from herald.queues.topology import EXCHANGE


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
