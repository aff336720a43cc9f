"""The broker: queue topology, the protobuf codec, confirmed batch publishing and batch consumers."""

from herald.queues.consumer import BatchConsumer, Delivery
from herald.queues.publisher import ConfirmingPublisher, PublisherThread, PublishFailed
from herald.queues.topology import ALL_QUEUES, CONTENT_TYPE, DB_QUEUE, SEND_QUEUE, declare_all

__all__ = [
    "ALL_QUEUES",
    "CONTENT_TYPE",
    "DB_QUEUE",
    "SEND_QUEUE",
    "BatchConsumer",
    "ConfirmingPublisher",
    "Delivery",
    "PublishFailed",
    "PublisherThread",
    "declare_all",
]
