"""PublisherThread's rounds on the real broker: a lone publish at a quiet moment goes at once, and a busy
publisher gathers its callers' items into one broker message."""

from __future__ import annotations

import threading
import time

from herald.queues import PublisherThread
from herald.v1.queue_pb2 import NotificationMessage
from tests.support import queue_depth, take_queued

QUEUE = "db-sms"


def _item(name: str) -> bytes:
    return NotificationMessage(id=name).SerializeToString()


def test_a_lone_publish_waits_for_no_company_and_a_busy_publisher_gathers(clean_broker: str) -> None:
    publisher = PublisherThread(clean_broker, gather=1.0)
    try:
        started = time.monotonic()
        publisher.publish(QUEUE, _item("alone"))
        alone = time.monotonic() - started
        # Just after a round: busy, so the next round waits its gather window for more callers' items.
        callers = [threading.Thread(target=publisher.publish, args=(QUEUE, _item(str(i)))) for i in range(8)]
        started = time.monotonic()
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10.0)
        together = time.monotonic() - started
    finally:
        publisher.close()
    assert alone < 0.5 <= together
    assert queue_depth(clean_broker, QUEUE) == 2  # broker messages: the lone one, then the eight together
    assert sorted(m.id for m in take_queued(clean_broker, QUEUE)) == sorted(["alone", *(str(i) for i in range(8))])
