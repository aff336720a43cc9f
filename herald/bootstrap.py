"""The one place that wires settings, logs, metrics and engine into running services."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from herald import logs, metrics
from herald.db.engine import make_engine
from herald.grpcsrv.server import wait_for_signal
from herald.settings import Settings

log = logging.getLogger(__name__)
Stop = Callable[[], None]


def prepare(app: str, settings: Settings) -> Engine:
    logs.configure(app, settings.log_level)
    metrics.configure(settings.environment, app, settings.statsd_host, settings.statsd_port, settings.metrics_port)
    return make_engine(settings.database_url)


def start_ingest(settings: Settings, engine: Engine) -> Stop:
    from services.ingest.app import build

    server, publisher = build(settings, engine)
    server.start()
    log.info("ingest listening", extra={"address": settings.ingest_address})

    def stop() -> None:
        server.stop(grace=10.0)  # answers in flight still get their broker confirm
        publisher.close()

    return stop


def start_callbacks(settings: Settings, engine: Engine) -> Stop:
    from services.callbacks.app import build

    server = build(settings, engine)
    server.start()
    log.info("callbacks listening", extra={"address": settings.callbacks_address})
    return lambda: server.stop(grace=10.0)


def start_dispatcher(settings: Settings, engine: Engine, queues: Sequence[str]) -> Stop:
    from services.dispatcher.app import build

    dispatcher = build(settings, engine, queues)
    dispatcher.server.start()
    dispatcher.thread.start()
    log.info("dispatcher consuming", extra={"queues": list(queues), "address": settings.dispatcher_address})
    return dispatcher.stop


def start_scheduler(settings: Settings, engine: Engine) -> Stop:
    from herald.queues import ConfirmingPublisher
    from herald.service_layer.delivery import Replayer
    from services.scheduler.app import start

    publisher = ConfirmingPublisher(settings.broker_url)
    stop = start(settings, engine, Replayer(engine, publisher, settings.email_domain))

    def stop_all() -> None:
        stop()
        publisher.close()

    return stop_all


def serve(app: str, settings: Settings, start: Callable[[Settings, Engine], Stop]) -> None:
    """Runs one service in this process until SIGTERM or SIGINT."""
    engine = prepare(app, settings)
    stop = start(settings, engine)
    wait_for_signal(stop)
    engine.dispose()
    log.info("stopped")


ALL_QUEUES_DISPATCHED = ("db-sms", "db-email", "send-sms", "send-email")


def start_all(settings: Settings, engine: Engine, *, provider_sim: bool = True) -> Stop:
    """Every service in one process: for `herald run` and small installations."""
    stops: list[Stop] = []
    if provider_sim:
        from urllib.parse import urlsplit

        from herald.providers.simulator import ProviderSimulator

        sim_url = urlsplit(settings.mmg_url)
        sim = ProviderSimulator(sim_url.hostname or "127.0.0.1", sim_url.port or 6011, settings.callbacks_address, 0.5)
        sim.start()
        stops.append(sim.stop)
    stops.append(start_callbacks(settings, engine))
    stops.append(start_dispatcher(settings, engine, ALL_QUEUES_DISPATCHED))
    stops.append(start_ingest(settings, engine))
    stops.append(start_scheduler(settings, engine))

    def stop() -> None:
        # Reverse order: the front door stops first, dispatchers finish, callbacks and the simulator last.
        for each in reversed(stops):
            each()

    return stop
