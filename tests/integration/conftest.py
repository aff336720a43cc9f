"""Servers the integration tests share: ingest's and the Admin servicers as their process serves them, and
the interceptor every Herald gRPC server runs (for the modules that use pytest-grpc's server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from sqlalchemy import Engine

from herald.crypto import SecretBox
from herald.grpcsrv.server import ObservingInterceptor, Server, ServiceBinding
from herald.queues import PublisherThread
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator
from herald.service_layer.senders import Senders
from herald.service_layer.sending import Sender
from herald.settings import Settings
from herald.v1 import admin_pb2_grpc, ingest_pb2_grpc
from services.ingest.admin_servicer import AdminServicer
from services.ingest.app import SERVICE_NAME
from services.ingest.servicer import IngestServicer
from tests.support import ADMIN_SECRET


@pytest.fixture(scope="module")
def grpc_interceptors() -> list[grpc.ServerInterceptor]:
    """pytest-grpc's server runs each servicer as herald.grpcsrv.server.Server does."""
    return [ObservingInterceptor()]


@pytest.fixture(scope="module")
def publisher_thread(settings: Settings) -> Iterator[PublisherThread]:
    p = PublisherThread(settings.broker_url)
    yield p
    p.close()


@contextmanager
def _serving(binding: ServiceBinding) -> Iterator[str]:
    """`binding` on a real server on a free port: its address."""
    server = Server("127.0.0.1:0", [binding])
    server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def ingest_stub(
    engine: Engine, settings: Settings, publisher_thread: PublisherThread
) -> Iterator[ingest_pb2_grpc.IngestStub]:
    """The ingest servicer on the real database and the test vhost. No caches, so that each test's
    templates and senders are read as the test made them."""
    servicer = IngestServicer(
        Authenticator(engine, SecretBox(settings.secret_key)),
        Sender(engine, publisher_thread.publish, "example.org"),
        engine,
    )
    with (
        _serving(ServiceBinding(servicer, ingest_pb2_grpc.add_IngestServicer_to_server, SERVICE_NAME)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield ingest_pb2_grpc.IngestStub(channel)


@pytest.fixture(scope="module")
def admin_address(engine: Engine, settings: Settings) -> Iterator[str]:
    """The Admin servicer, sender management included, signed for with tests.support.ADMIN_SECRET."""
    box = SecretBox(settings.secret_key)
    servicer = AdminServicer(Authenticator(engine, box, ADMIN_SECRET), Admin(engine, box), senders=Senders(engine))
    with _serving(ServiceBinding(servicer, admin_pb2_grpc.add_AdminServicer_to_server, "herald.v1.Admin")) as address:
        yield address


@pytest.fixture(scope="module")
def admin_stub(admin_address: str) -> Iterator[admin_pb2_grpc.AdminStub]:
    with grpc.insecure_channel(admin_address) as channel:
        yield admin_pb2_grpc.AdminStub(channel)
