"""Every exchange and queue, in one place.

API sends go ingest -> db-{type} -> send-{type}; CSV jobs go process-job -> bulk-{type} ->
send-bulk-{type}: their own lanes from start to provider, so that one large job never delays a single
send (`send_lane` is the one place that picks a row's send queue). Provider receipts (real or
simulated) are made durable on sms-callbacks / ses-callbacks (Notify's names) before anyone is
answered. Queues are durable, messages persistent; what a consumer rejects goes to dead-letter rather
than away.
"""

from __future__ import annotations

from typing import Final

from kombu import Connection, Exchange, Queue, binding

from herald.v1.notifications_pb2 import NotificationType

CONTENT_TYPE: Final = "application/x-protobuf"
EXCHANGE: Final = Exchange("herald", type="direct", durable=True)
DEAD_EXCHANGE: Final = Exchange("herald.dead", type="direct", durable=True)
DEAD_LETTER: Final = "dead-letter"

DB_QUEUE: Final = {NotificationType.SMS: "db-sms", NotificationType.EMAIL: "db-email"}
SEND_QUEUE: Final = {NotificationType.SMS: "send-sms", NotificationType.EMAIL: "send-email"}
BULK_QUEUE: Final = {NotificationType.SMS: "bulk-sms", NotificationType.EMAIL: "bulk-email"}
SEND_BULK_QUEUE: Final = {NotificationType.SMS: "send-bulk-sms", NotificationType.EMAIL: "send-bulk-email"}
# A job to start or resume (Notify's job-tasks): its processor expands the rows onto bulk-*.
PROCESS_JOB_QUEUE: Final = "process-job"
RECEIPT_QUEUE: Final = {"mmg": "sms-callbacks", "firetext": "sms-callbacks", "ses": "ses-callbacks"}
RECEIPT_QUEUES: Final = tuple(sorted(set(RECEIPT_QUEUE.values())))
# Delivery-status callbacks to services; a failed one waits on the retry queue, which dead-letters it back.
SERVICE_CALLBACK_QUEUE: Final = "service-callbacks"
SERVICE_CALLBACK_RETRY_QUEUE: Final = "service-callbacks-retry"
# Received text messages: durable here before the provider is answered; a dispatcher stores them.
INBOUND_QUEUE: Final = "inbound-sms"
WORK_QUEUES: Final = (
    *DB_QUEUE.values(),
    *SEND_QUEUE.values(),
    *BULK_QUEUE.values(),
    *SEND_BULK_QUEUE.values(),
    PROCESS_JOB_QUEUE,
    *RECEIPT_QUEUES,
    SERVICE_CALLBACK_QUEUE,
    INBOUND_QUEUE,
)
ALL_QUEUES: Final = (*WORK_QUEUES, DEAD_LETTER)


def send_lane(notification_type: NotificationType.ValueType, job_id: str) -> str:
    """The send queue of a stored notification: a job's row never shares a lane with a single send."""
    return (SEND_BULK_QUEUE if job_id else SEND_QUEUE)[notification_type]


_DEAD_LETTERING: Final = {
    "x-dead-letter-exchange": DEAD_EXCHANGE.name,
    "x-dead-letter-routing-key": DEAD_LETTER,
}
QUEUE_TYPES: Final = ("quorum", "classic")
# Quorum queues are replicated across a RabbitMQ cluster (classic mirrored queues are gone in RabbitMQ 4);
# classic ones suit a single node and the in-process broker of `make run`. Every feature Herald uses
# (dead-lettering, redelivery, prefetch, basic.get for the dead-letter tools) works with both. Set once
# per process from HERALD_QUEUE_TYPE; a queue's type cannot change once declared on a broker.
_queue_type = "quorum"


def use_queue_type(queue_type: str) -> None:
    global _queue_type
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"HERALD_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, not {queue_type!r}")
    _queue_type = queue_type


def queue(name: str) -> Queue:
    if name == DEAD_LETTER:
        # Reached two ways: the broker dead-letters what a consumer rejects (herald.dead), and a
        # dispatcher publishes a single bad notification of a batch there itself (herald).
        return Queue(
            name,
            bindings=[binding(DEAD_EXCHANGE, routing_key=name), binding(EXCHANGE, routing_key=name)],
            durable=True,
            queue_arguments={"x-queue-type": _queue_type},
        )
    if name not in WORK_QUEUES:
        raise ValueError(f"unknown queue {name!r}; known: {', '.join(ALL_QUEUES)}")
    arguments = {**_DEAD_LETTERING, "x-queue-type": _queue_type}
    return Queue(name, EXCHANGE, routing_key=name, durable=True, queue_arguments=arguments)


def callback_retry_queue(delay_seconds: float) -> Queue:
    """A durable delay: nobody consumes it; each message expires after `delay_seconds` and the broker
    dead-letters it back to service-callbacks. Declared by the service-callbacks dispatcher only (its TTL
    is that process's setting); a queue's arguments cannot change on a broker, so a new delay means
    deleting this queue (it holds only waiting retries) before the dispatchers restart."""
    arguments: dict[str, object] = {
        "x-queue-type": _queue_type,
        "x-message-ttl": round(delay_seconds * 1000),
        "x-dead-letter-exchange": EXCHANGE.name,
        "x-dead-letter-routing-key": SERVICE_CALLBACK_QUEUE,
    }
    if _queue_type == "quorum":
        # Quorum queues dead-letter at most once unless asked (RabbitMQ 3.10+); at least once needs
        # reject-publish overflow. Classic queues refuse the argument.
        arguments.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    name = SERVICE_CALLBACK_RETRY_QUEUE
    return Queue(name, EXCHANGE, routing_key=name, durable=True, queue_arguments=arguments)


def declare_all(connection: Connection) -> None:
    channel = connection.default_channel
    for name in ALL_QUEUES:
        queue(name)(channel).declare()
