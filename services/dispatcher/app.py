"""Composition root of a dispatcher: `--queues` picks its roles, so each queue scales on its own.

db-* and bulk-* queues persist (Persister); send-* and send-bulk-* queues hand off to providers
(Deliverer); process-job expands CSV jobs onto bulk-* (JobProcessor); sms-callbacks and
ses-callbacks apply receipts (ReceiptApplier) and queue delivery-status callbacks to services, which
service-callbacks POSTs (CallbackSender); inbound-sms stores received text messages (InboundStorer) and
queues their services' inbound-SMS callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2
from sqlalchemy import Engine

from herald import metrics
from herald.db.errors import is_transient
from herald.domain.retries import RetrySchedule
from herald.grpcsrv.server import Server
from herald.providers import EmailProvider, FiretextClient, MmgClient, SmsProvider
from herald.providers.rotation import ProviderRotation, parse_weights
from herald.queues import BatchConsumer, ConfirmingPublisher, Delivery, PublishFailed
from herald.queues.broker import connect
from herald.queues.consumer import BatchHandler
from herald.queues.topology import (
    BULK_QUEUE,
    DB_QUEUE,
    INBOUND_QUEUE,
    PROCESS_JOB_QUEUE,
    RECEIPT_QUEUES,
    SEND_BULK_QUEUE,
    SEND_QUEUE,
    SERVICE_CALLBACK_QUEUE,
    callback_retry_queue,
    queue,
)
from herald.service_layer.delivery import Deliverer, Persister
from herald.settings import Settings
from herald.v1.notifications_pb2 import NotificationType

if TYPE_CHECKING:
    from herald.service_layer.inbound import InboundStorer
    from herald.service_layer.jobs import JobProcessor
    from herald.service_layer.receipts import ReceiptApplier
    from herald.service_layer.service_callbacks import CallbackSender

log = logging.getLogger(__name__)


@dataclass
class Dispatcher:
    """One consumer (and thread) per lane of the queues it was given: see `lane`."""

    consumers: list[BatchConsumer]
    server: Server
    threads: list[threading.Thread]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        for consumer in self.consumers:
            consumer.should_stop = True
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.server.stop(grace=1.0)


def lane(name: str) -> str:
    """A process consuming several queues runs one consumer per lane, so a single send never waits in the
    process behind a job's batch, nor behind a job being expanded (process-job holds its consumer for as
    long as the job takes), nor behind a service's slow callback receiver."""
    if name == PROCESS_JOB_QUEUE:
        return "jobs"
    if name in BULK_QUEUE.values() or name in SEND_BULK_QUEUE.values():
        return "bulk"
    if name == SERVICE_CALLBACK_QUEUE:
        # A dead receiver holds its batch for a timeout: never sends', receipts' or received texts' batches.
        return "service-callbacks"
    if name in RECEIPT_QUEUES:
        # Receipts linger for bigger batches (RECEIPT_LINGER), which a single send must not wait behind.
        return "receipts"
    if name in SEND_QUEUE.values():
        # Holds only the messages it is handing off (_LANE_BATCHES), unlike db-*.
        return "send"
    return "single"


def _transient(error: BaseException) -> bool:
    """The database or the broker is away: keep the batch and try again, never dead-letter it."""
    return is_transient(error) or isinstance(error, PublishFailed)


def _on_provider_switch(name: str, in_rotation: bool, reason: str) -> None:
    metrics.incr("provider_switches", provider=name, to="in" if in_rotation else "out")


def _deliverer(settings: Settings, engine: Engine, publisher: ConfirmingPublisher, queues: Sequence[str]) -> Deliverer:
    sms: dict[str, SmsProvider] = {
        # Kept open between batches: a connection per hand-off in flight (send_sms_all has them all out at once).
        "mmg": MmgClient(settings.mmg_url, max_connections=settings.send_concurrency),
        "firetext": FiretextClient(settings.firetext_url, max_connections=settings.send_concurrency),
    }
    weights = parse_weights(settings.sms_provider_weights)
    unknown = set(weights) - set(sms)
    if unknown:
        raise ValueError(f"HERALD_SMS_PROVIDER_WEIGHTS names unknown providers: {', '.join(sorted(unknown))}")
    rotation = ProviderRotation(
        weights,
        error_ratio_threshold=settings.provider_error_threshold,
        latency_threshold_seconds=settings.provider_latency_threshold,
        cooldown_seconds=settings.provider_cooldown_seconds,
        on_switch=_on_provider_switch,
    )
    return Deliverer(
        engine,
        publisher,
        {name: sms[name] for name in weights},
        rotation,
        _ses_client(settings) if _EMAIL_SEND_QUEUES.intersection(queues) else None,
        schedule=RetrySchedule.parse(settings.retry_delays),
        lease_seconds=settings.send_lease_seconds,
        concurrency=settings.send_concurrency,
    )


_EMAIL_SEND_QUEUES = frozenset({SEND_QUEUE[NotificationType.EMAIL], SEND_BULK_QUEUE[NotificationType.EMAIL]})


def _ses_client(settings: Settings) -> EmailProvider:
    # Imported by the processes that send email: boto3 and the SES client (its service model, botocore's
    # endpoints) are ~20 MB that a send-sms dispatcher need not hold.
    from herald.providers.ses import SesClient

    return SesClient(
        settings.ses_url or None,
        region_name=settings.ses_region,
        access_key_id=settings.ses_access_key_id,
        secret_access_key=settings.ses_secret_access_key,
        configuration_set_name=settings.ses_configuration_set,
        max_connections=settings.send_concurrency,
    )


# The roles below are imported by the processes that run them: receipts, received texts and callbacks
# bring the callbacks' encryption (cryptography, ~7 MB) that the send and db lanes' processes need not hold.


def _receipt_applier(settings: Settings, engine: Engine, publisher: ConfirmingPublisher) -> ReceiptApplier:
    from herald.service_layer.receipts import ReceiptApplier
    from herald.service_layer.service_callbacks import CallbackTrigger

    return ReceiptApplier(engine, publisher, CallbackTrigger(publisher, settings.cache_seconds))


def _callback_sender(settings: Settings, engine: Engine, publisher: ConfirmingPublisher) -> CallbackSender:
    from herald.crypto import SecretBox
    from herald.service_layer.service_callbacks import CallbackSender

    with connect(settings.broker_url) as conn:
        # The in-process broker (make run) has no message TTL or dead-lettering: no delayed retries there.
        retries = conn.transport.driver_type == "amqp"
        if retries:
            callback_retry_queue(settings.callback_retry_seconds)(conn.default_channel).declare()
    return CallbackSender(
        engine,
        SecretBox(settings.secret_key),
        publisher,
        concurrency=settings.callback_concurrency,
        per_receiver=settings.callback_receiver_concurrency,
        cache_seconds=settings.cache_seconds,
        retries=retries,
    )


def _inbound_storer(settings: Settings, engine: Engine, publisher: ConfirmingPublisher) -> InboundStorer:
    from herald.service_layer.inbound import InboundStorer
    from herald.service_layer.service_callbacks import CallbackTrigger

    return InboundStorer(engine, publisher, CallbackTrigger(publisher, settings.cache_seconds))


def _job_processor(settings: Settings, engine: Engine, publisher: ConfirmingPublisher) -> JobProcessor:
    # Imported by the one role that needs them: sending's checks and the limits (phonenumbers, redis)
    # are 8 MB that the other lanes' processes need not hold.
    from herald.service_layer.jobs import JobProcessor
    from herald.service_layer.rules import ServiceRules
    from herald.service_layer.sending import Sender

    def never(routing_key: str, item: bytes, timeout: float = 0.0) -> None:
        raise AssertionError("a job's rows are published by its processor, in chunks")

    # Rows are checked and rendered by a single send's Sender; without rules, since a job's daily limit
    # is checked once for the whole job (by the processor, with the same counters).
    sender = Sender(engine, never, settings.email_domain, settings.cache_seconds, settings.stale_seconds)
    return JobProcessor(
        engine,
        publisher,
        sender,
        ServiceRules.from_settings(settings, engine),
        rows_per_second=settings.job_rows_per_second,
    )


def build(settings: Settings, engine: Engine, queues: Sequence[str]) -> Dispatcher:
    for name in queues:
        queue(name)  # an unknown name fails here, before anything starts
    lanes: dict[str, list[str]] = {}
    for name in queues:
        lanes.setdefault(lane(name), []).append(name)
    server = Server(settings.dispatcher_address, [])
    consumers = [_lane_consumer(settings, engine, names) for names in lanes.values()]
    threads = [
        threading.Thread(target=_consume, args=(consumer, server), name=f"dispatcher-{name}", daemon=True)
        for name, consumer in zip(lanes, consumers, strict=True)
    ]
    return Dispatcher(consumers, server, threads)


def _consume(consumer: BatchConsumer, server: Server) -> None:
    try:
        consumer.run_until_stopped()
    finally:
        if not consumer.should_stop:
            # The consumer died without being asked to: say so, so that liveness probes restart us.
            log.error("consumer stopped unexpectedly", extra={"queues": consumer.queue_names})
            server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)


def _lane_consumer(settings: Settings, engine: Engine, queues: Sequence[str]) -> BatchConsumer:
    """One lane's consumer, with its own publisher (a ConfirmingPublisher is for one thread) and handlers."""
    publisher = ConfirmingPublisher(settings.broker_url)
    made: dict[str, BatchHandler] = {}

    def role(kind: str, make: Callable[[], BatchHandler]) -> BatchHandler:
        """One handler per role, shared by the role's queues (db-sms and db-email, say)."""
        if kind not in made:
            made[kind] = make()
        return made[kind]

    roles: dict[str, BatchHandler] = {}
    for name in queues:
        if name in DB_QUEUE.values() or name in BULK_QUEUE.values():
            roles[name] = role("persist", lambda: Persister(engine, publisher))
        elif name in SEND_QUEUE.values() or name in SEND_BULK_QUEUE.values():
            roles[name] = role("send", lambda: _deliverer(settings, engine, publisher, queues))
        elif name == PROCESS_JOB_QUEUE:
            roles[name] = role("jobs", lambda: _job_processor(settings, engine, publisher))
        elif name in RECEIPT_QUEUES:
            roles[name] = role("receipts", lambda: _receipt_applier(settings, engine, publisher))
        elif name == SERVICE_CALLBACK_QUEUE:
            roles[name] = role("service-callbacks", lambda: _callback_sender(settings, engine, publisher))
        elif name == INBOUND_QUEUE:
            roles[name] = role("inbound", lambda: _inbound_storer(settings, engine, publisher))
        else:
            raise ValueError(f"no dispatcher role for {name} yet")

    def handle(batch: Sequence[Delivery]) -> None:
        # A batch may mix queues when a process consumes several; each part goes to its role.
        by_queue: dict[str, list[Delivery]] = {}
        for delivery in batch:
            by_queue.setdefault(delivery.queue, []).append(delivery)
        for name, deliveries in by_queue.items():
            roles[name](deliveries)

    batch_size, prefetch = _LANE_BATCHES.get(lane(queues[0]), (settings.db_batch_size, settings.prefetch))
    return BatchConsumer(
        connect(settings.broker_url),
        queues,
        handle,
        batch_size=batch_size,
        linger=RECEIPT_LINGER if lane(queues[0]) == "receipts" else settings.db_batch_linger,
        prefetch=prefetch,
        is_transient=_transient,
    )


# Broker messages per batch, and held unacknowledged, for the job lanes. A job is expanded for as long as
# it takes, its message unacknowledged: one at a time, so that other processors take the other jobs. A
# bulk-* or send-bulk-* message already holds a chunk of a job (1,000 rows or more): a few at a time keep
# a batch's statement, memory and redelivery bounded when a backlog waits.
# A send-* batch is handed off whole before the next is taken (4 s for 1,200 SMS at 16 in flight and
# 50 ms), so what a send dispatcher holds beyond its batch waits while another may idle: at the default
# prefetch one of two dispatchers held most of goal 4's backlog, and two delivered 1.4x one. Prefetch
# equal to the batch holds nothing back: 1.93-1.96x. Not 1 or 2: single sends' messages carry ~40 SMS,
# and 64 hand-offs in flight need several (unary-fed live, 50 ms provider: ~400/s at 1 or 2, ~600/s at
# 4, ~700/s at the default). Not 8: a batch that closes short of 8 lets the broker park more (1.5-1.9x).
_LANE_BATCHES: dict[str, tuple[int, int]] = {"jobs": (1, 1), "bulk": (2, 4), "send": (4, 4)}
# How long the receipts lane gathers a batch. A batch's transaction (a read under lock, a write, the
# commit, the acks) costs as much CPU as applying tens of receipts, and callbacks hands receipts over a
# few at a time: gathered for 5 ms, as db-* are, a receipt cost 0.14 ms of the dispatcher's CPU at
# 900 receipts a second. A notification's final status shows this much later; nothing waits for it.
RECEIPT_LINGER = 0.05
