"""The one place that wires settings, logs, metrics and engine into running services."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from herald import logs, metrics
from herald.db.engine import make_engine
from herald.grpcsrv.server import wait_for_signal
from herald.queues import ConfirmingPublisher
from herald.queues.topology import use_queue_type
from herald.settings import Settings

log = logging.getLogger(__name__)
Stop = Callable[[], None]


def prepare(app: str, settings: Settings) -> Engine:
    logs.configure(app, settings.log_level)
    use_queue_type(settings.queue_type)
    metrics.configure(
        settings.environment,
        app,
        settings.statsd_host,
        settings.statsd_port,
        settings.metrics_port,
        statsd_enabled=settings.statsd_enabled,
    )
    return make_engine(settings.database_url)


def start_ingest(settings: Settings, engine: Engine) -> Stop:
    from services.ingest.app import build

    server, publisher, rules = build(settings, engine)
    server.start()
    log.info("ingest listening", extra={"address": settings.ingest_address})

    def stop() -> None:
        server.stop(grace=10.0)  # answers in flight still get their broker confirm
        publisher.close()
        rules.close()

    return stop


def start_callbacks(settings: Settings, engine: Engine) -> Stop:
    from services.callbacks.app import build

    server, publisher = build(settings)
    server.start()
    log.info("callbacks listening", extra={"address": settings.callbacks_address})

    def stop() -> None:
        server.stop(grace=10.0)  # receipts in flight still get their broker confirm
        publisher.close()

    return stop


def start_dispatcher(settings: Settings, engine: Engine, queues: Sequence[str]) -> Stop:
    from services.dispatcher.app import build

    dispatcher = build(settings, engine, queues)
    dispatcher.server.start()
    dispatcher.start()
    log.info("dispatcher consuming", extra={"queues": list(queues), "address": settings.dispatcher_address})
    return dispatcher.stop


def start_scheduler(settings: Settings, engine: Engine) -> Stop:
    from herald.service_layer.delivery import Republisher
    from herald.service_layer.service_callbacks import CallbackTrigger
    from services.scheduler.app import start

    # Tasks run in threads of their own; a ConfirmingPublisher is for one thread, hence one per use.
    publisher = _LockedPublisher(ConfirmingPublisher(settings.broker_url))
    stop = start(
        settings,
        engine,
        Republisher(publisher, settings.email_domain),
        CallbackTrigger(publisher, settings.cache_seconds),
        publisher,  # process-job: scheduled jobs due, stalled jobs
    )

    def stop_all() -> None:
        stop()
        publisher.close()

    return stop_all


class _LockedPublisher:
    """A ConfirmingPublisher shared by the scheduler's task threads, one publish at a time."""

    def __init__(self, publisher: ConfirmingPublisher) -> None:
        self._publisher = publisher
        self._lock = threading.Lock()

    def publish_batch(self, items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._publisher.publish_batch(items, headers)

    def close(self) -> None:
        with self._lock:
            self._publisher.close()


def serve(app: str, settings: Settings, start: Callable[[Settings, Engine], Stop]) -> None:
    """Runs one service in this process until SIGTERM or SIGINT."""
    engine = prepare(app, settings)
    stop = start(settings, engine)
    wait_for_signal(stop)
    engine.dispose()
    log.info("stopped")


ALL_QUEUES_DISPATCHED = (
    "db-sms",
    "db-email",
    "send-sms",
    "send-email",
    "bulk-sms",
    "bulk-email",
    "send-bulk-sms",
    "send-bulk-email",
    "process-job",
    "sms-callbacks",
    "ses-callbacks",
    "service-callbacks",
    "inbound-sms",
)
