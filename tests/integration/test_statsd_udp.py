"""Statsd on a real UDP socket: the exact names a real ingest server emits for its RPCs, under
`{environment}.notifications.{app}.`, and nothing at all when HERALD_STATSD_ENABLED is off."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import Engine

from herald import metrics
from herald.crypto import SecretBox
from herald.domain.apikeys import create_token, split_key
from herald.grpcsrv.server import Server, ServiceBinding
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator
from herald.service_layer.sending import Sender
from herald.settings import Settings
from herald.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest.servicer import IngestServicer

PREFIX = "test.notifications.ingest."


@pytest.fixture
def statsd_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        yield sock
    metrics.configure("test", "ingest", "", 8125, 0, statsd_enabled=False)


def _received(sock: socket.socket, until: set[str], timeout: float = 5.0) -> list[str]:
    """Statsd lines (`name:value|type`) received until every name in `until` was seen, or `timeout`."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until <= {line.split(":", 1)[0] for line in lines}:
        try:
            lines.extend(sock.recv(65535).decode().splitlines())
        except TimeoutError:
            continue
    return lines


@pytest.fixture
def ingest(clean_db: Engine, settings: Settings) -> Iterator[ingest_pb2_grpc.IngestStub]:
    box = SecretBox(settings.secret_key)
    published: list[tuple[str, bytes]] = []
    servicer = IngestServicer(
        Authenticator(clean_db, box),
        Sender(clean_db, lambda routing_key, item, timeout=0.0: published.append((routing_key, item)), "x.org"),
        clean_db,
    )
    server = Server("127.0.0.1:0", [ServiceBinding(servicer, ingest_pb2_grpc.add_IngestServicer_to_server, "x")])
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield ingest_pb2_grpc.IngestStub(channel)
    server.stop(0)


def test_rpcs_emit_the_seeds_names(
    statsd_socket: socket.socket, ingest: ingest_pb2_grpc.IngestStub, admin: Admin
) -> None:
    metrics.configure("test", "ingest", "127.0.0.1", statsd_socket.getsockname()[1], 0, statsd_enabled=True)
    service = admin.create_service("Statsd test")
    key = split_key(admin.create_api_key(service, "live", "normal"))
    template = admin.create_template(service, "sms", "sms", "Hi ((name))")
    request = ingest_pb2.SendSmsRequest(phone_number="07700 900 123", template_id=template)
    request.personalisation.update({"name": "Ada"})

    ingest.SendSms(request, metadata=[("authorization", f"Bearer {create_token(key.secret, key.service_id)}")])
    with pytest.raises(grpc.RpcError):
        ingest.SendSms(request)  # no token

    ok, refused = PREFIX + "api.Ingest.SendSms.OK", PREFIX + "api.Ingest.SendSms.Unauthenticated"
    lines = _received(statsd_socket, until={ok, refused})
    assert f"{ok}:1|c" in lines
    assert f"{refused}:1|c" in lines
    timers = [line for line in lines if line.startswith(f"{ok}:") and line.endswith("|ms")]
    assert len(timers) == 1
    assert 0 < float(timers[0].split(":")[1].removesuffix("|ms")) < 5000  # milliseconds, as statsd expects
    assert all(line.startswith(PREFIX) for line in lines)


def test_switched_off_nothing_is_sent(statsd_socket: socket.socket, ingest: ingest_pb2_grpc.IngestStub) -> None:
    metrics.configure("test", "ingest", "127.0.0.1", statsd_socket.getsockname()[1], 0, statsd_enabled=False)
    with pytest.raises(grpc.RpcError):
        ingest.SendSms(ingest_pb2.SendSmsRequest())
    with pytest.raises(TimeoutError):
        statsd_socket.recv(65535)
