"""Servers the integration tests share: the ingest servicer as its process serves it, and the interceptor
every Herald gRPC server runs (for the modules that use pytest-grpc's server)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import Engine

from herald.crypto import SecretBox
from herald.grpcsrv.server import ObservingInterceptor, Server, ServiceBinding
from herald.queues import PublisherThread
from herald.service_layer.auth import Authenticator
from herald.service_layer.sending import Sender
from herald.settings import Settings
from herald.v1 import ingest_pb2_grpc
from services.ingest.app import SERVICE_NAME
from services.ingest.servicer import IngestServicer


@pytest.fixture(scope="module")
def grpc_interceptors() -> list[grpc.ServerInterceptor]:
    """pytest-grpc's server runs each servicer as herald.grpcsrv.server.Server does."""
    return [ObservingInterceptor()]


@pytest.fixture(scope="module")
def publisher_thread(settings: Settings) -> Iterator[PublisherThread]:
    p = PublisherThread(settings.broker_url)
    yield p
    p.close()


@pytest.fixture(scope="module")
def ingest_stub(
    engine: Engine, settings: Settings, publisher_thread: PublisherThread
) -> Iterator[ingest_pb2_grpc.IngestStub]:
    """The ingest servicer on a real server, the real database and the test vhost. No caches, so that each
    test's templates and senders are read as the test made them."""
    servicer = IngestServicer(
        Authenticator(engine, SecretBox(settings.secret_key)),
        Sender(engine, publisher_thread.publish, "example.org"),
        engine,
    )
    server = Server(
        "127.0.0.1:0", [ServiceBinding(servicer, ingest_pb2_grpc.add_IngestServicer_to_server, SERVICE_NAME)]
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield ingest_pb2_grpc.IngestStub(channel)
    finally:
        server.stop(0)
