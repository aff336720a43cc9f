"""Composition root of a dispatcher: `--queues` picks its roles, so each queue scales on its own.

db-* queues persist (Persister); send-* queues hand off to providers (Deliverer).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from kombu import Connection
from sqlalchemy import Engine

from herald.clients import CallbacksClient
from herald.grpcsrv.server import Server
from herald.providers import FiretextClient, MmgClient, SesClient, SmsProvider
from herald.queues import BatchConsumer, ConfirmingPublisher, Delivery
from herald.queues.topology import DB_QUEUE, SEND_QUEUE, queue
from herald.service_layer.delivery import Deliverer, Persister
from herald.settings import Settings


@dataclass
class Dispatcher:
    consumer: BatchConsumer
    server: Server
    thread: threading.Thread

    def stop(self, timeout: float = 20.0) -> None:
        self.consumer.should_stop = True
        self.thread.join(timeout)
        self.server.stop(grace=1.0)


def _sms_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "firetext":
        return FiretextClient(settings.firetext_url)
    return MmgClient(settings.mmg_url)


def build(settings: Settings, engine: Engine, queues: Sequence[str]) -> Dispatcher:
    for name in queues:
        queue(name)  # an unknown name fails here, before anything starts
    db_queues = set(DB_QUEUE.values())
    send_queues = set(SEND_QUEUE.values())
    persister = Persister(engine, ConfirmingPublisher(settings.broker_url))
    callbacks = CallbacksClient(settings.callbacks_address)
    deliverer = Deliverer(
        engine,
        _sms_provider(settings),
        SesClient(settings.ses_url),
        callbacks.simulate,
        concurrency=settings.send_concurrency,
    )

    def handle(batch: Sequence[Delivery]) -> None:
        # A batch may mix queues when a process consumes several; each part goes to its role.
        stored = [d for d in batch if d.queue in db_queues]
        sends = [d for d in batch if d.queue in send_queues]
        if stored:
            persister(stored)
        if sends:
            deliverer(sends)

    unsupported = set(queues) - db_queues - send_queues
    if unsupported:
        raise ValueError(f"no dispatcher role for {', '.join(sorted(unsupported))} yet")
    consumer = BatchConsumer(
        Connection(settings.broker_url),
        queues,
        handle,
        batch_size=settings.db_batch_size,
        linger=settings.db_batch_linger,
        prefetch=settings.prefetch,
    )
    server = Server(settings.dispatcher_address, [])
    thread = threading.Thread(target=consumer.run_until_stopped, name="dispatcher", daemon=True)
    return Dispatcher(consumer, server, thread)
