"""Composition root of the scheduler: the task table, its runner thread and the gRPC server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from herald.grpcsrv.server import Server, ServiceBinding
from herald.scheduling import Runner
from herald.scheduling.tasks import Republish, build_tasks
from herald.service_layer.jobs import BatchPublish
from herald.service_layer.service_callbacks import CallbackTrigger
from herald.settings import Settings
from herald.v1 import scheduler_pb2_grpc
from services.scheduler.servicer import SchedulerServicer

log = logging.getLogger(__name__)

SERVICE_NAME = "herald.v1.Scheduler"
# How long SIGTERM waits for work in hand (a RunTask call, the runner's task), within Kubernetes'
# default 30 s. Tasks commit batch by batch, so one cut short keeps what it did; the rest waits for
# its next slot.
SHUTDOWN_GRACE = 20.0


def build(
    settings: Settings,
    engine: Engine,
    republish: Republish | None = None,
    callbacks: CallbackTrigger | None = None,
    publisher: BatchPublish | None = None,
) -> tuple[Runner, Server]:
    runner = Runner(engine, build_tasks(settings, republish, callbacks, publisher))
    binding = ServiceBinding(
        SchedulerServicer(runner), scheduler_pb2_grpc.add_SchedulerServicer_to_server, SERVICE_NAME
    )
    return runner, Server(settings.scheduler_address, [binding])


def start(
    settings: Settings,
    engine: Engine,
    republish: Republish | None = None,
    callbacks: CallbackTrigger | None = None,
    publisher: BatchPublish | None = None,
) -> Callable[[], None]:
    """Starts the server and the runner thread; returns the graceful stop."""
    runner, server = build(settings, engine, republish, callbacks, publisher)
    stopping = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stopping,), name="scheduler", daemon=True)
    server.start()
    thread.start()
    log.info(
        "scheduler running",
        extra={"address": settings.scheduler_address, "tasks": [t.name for t in runner.tasks]},
    )

    def stop() -> None:
        deadline = time.monotonic() + SHUTDOWN_GRACE
        stopping.set()  # no new task starts; the one in hand (if any) runs on meanwhile
        server.stop(grace=SHUTDOWN_GRACE)
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            # The process exit closes its connection, and with it the task's lock.
            log.warning("scheduled task still running at shutdown", extra={"grace": SHUTDOWN_GRACE})

    return stop
