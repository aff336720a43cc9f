"""An idempotency key reused with a different request is refused (INVALID_ARGUMENT on `idempotency-key`)
and changes nothing; the same request again is the same notification (the ingest servicer on the real
database and broker; the db dispatcher run by hand)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from herald.crypto import SecretBox
from herald.db import notifications as notifications_db
from herald.db.engine import make_engine
from herald.domain.apikeys import create_token, split_key
from herald.grpcsrv.errors import field_violations
from herald.queues import ConfirmingPublisher
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.auth import Authenticator
from herald.service_layer.sending import KEY_REUSED, SendCommand, Sender, notification_id
from herald.settings import Settings
from herald.v1 import ingest_pb2
from herald.v1.ingest_pb2_grpc import IngestStub
from herald.v1.notifications_pb2 import NotificationType
from herald.v1.queue_pb2 import NotificationMessage
from tests.conftest import PG_HOST, PG_PORT
from tests.integration.test_scheduled_store import _message, _persist, demo, publisher
from tests.support import TcpProxy, bearer, take_queued

__all__ = ["demo", "publisher"]  # the fixtures, shared with test_scheduled_store


@pytest.fixture
def setup(admin: Admin, clean_broker: str) -> dict[str, str]:
    service = admin.create_service("Idempotency keys")
    return {
        "key": admin.create_api_key(service, "live", "normal"),
        "sms": admin.create_template(service, "sms", "sms", "Hi ((name))"),
    }


def _sms(setup: dict[str, str], to: str = "07700 900 123", **personalisation: str) -> ingest_pb2.SendSmsRequest:
    request = ingest_pb2.SendSmsRequest(phone_number=to, template_id=setup["sms"])
    request.personalisation.update(personalisation or {"name": "Ada"})
    return request


def _keyed(setup: dict[str, str], key: str) -> list[tuple[str, str]]:
    return [*bearer(setup["key"]), ("idempotency-key", key)]


def _stored(engine: Engine, publisher: ConfirmingPublisher, settings: Settings) -> list[NotificationMessage]:
    """What ingest queued, stored by the db dispatcher."""
    queued = take_queued(settings.broker_url, "db-sms")
    if queued:
        _persist(engine, publisher, *queued)
    take_queued(settings.broker_url, "send-sms")
    return queued


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM notifications")) or 0)


def test_the_same_request_again_is_the_same_notification(
    ingest_stub: IngestStub, setup: dict[str, str], clean_db: Engine, publisher: ConfirmingPublisher, settings: Settings
) -> None:
    key = f"order-{uuid.uuid4()}"
    first = ingest_stub.SendSms(_sms(setup), metadata=_keyed(setup, key))
    [message] = _stored(clean_db, publisher, settings)
    assert len(message.request_hash) == 32
    with clean_db.connect() as conn:
        assert notifications_db.request_hashes(conn, [first.id]) == {first.id: message.request_hash}

    # The caller's spelling of the number and the personalisation's key order are not the request.
    again = ingest_stub.SendSms(_sms(setup, "+447700900123"), metadata=_keyed(setup, key))
    assert again.id == first.id
    assert again.body == first.body
    [repeat] = _stored(clean_db, publisher, settings)
    assert repeat.request_hash == message.request_hash
    assert _count(clean_db) == 1


def test_the_key_with_another_recipient_is_refused_and_nothing_is_sent(
    ingest_stub: IngestStub, setup: dict[str, str], clean_db: Engine, publisher: ConfirmingPublisher, settings: Settings
) -> None:
    key = f"order-{uuid.uuid4()}"
    ingest_stub.SendSms(_sms(setup), metadata=_keyed(setup, key))
    _stored(clean_db, publisher, settings)

    for different in (_sms(setup, "07700900999"), _sms(setup, name="Bob")):
        with pytest.raises(grpc.RpcError) as err:
            ingest_stub.SendSms(different, metadata=_keyed(setup, key))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == KEY_REUSED
        assert field_violations(err.value) == [("idempotency-key", KEY_REUSED)]
    assert take_queued(settings.broker_url, "db-sms") == []
    assert _count(clean_db) == 1
    # Another key is another notification.
    ingest_stub.SendSms(_sms(setup, "07700900999"), metadata=_keyed(setup, f"order-{uuid.uuid4()}"))
    assert len(take_queued(settings.broker_url, "db-sms")) == 1


def test_a_batch_refuses_the_items_that_reuse_a_key_for_another_request(
    ingest_stub: IngestStub, setup: dict[str, str], clean_db: Engine, publisher: ConfirmingPublisher, settings: Settings
) -> None:
    stored_key, new_key = f"order-{uuid.uuid4()}", f"order-{uuid.uuid4()}"
    ingest_stub.SendSms(_sms(setup), metadata=_keyed(setup, stored_key))
    _stored(clean_db, publisher, settings)

    def item(key: str, to: str) -> ingest_pb2.SendSmsRequest:
        request = _sms(setup, to)
        request.idempotency_key = key
        return request

    answer = ingest_stub.SendSmsBatch(
        ingest_pb2.SendSmsBatchRequest(
            items=[
                item(stored_key, "07700900123"),  # the stored request again
                item(stored_key, "07700900999"),  # the stored key, another request
                item(new_key, "07700900111"),
                item(new_key, "07700900111"),  # the same request twice in one call
                item(new_key, "07700900222"),  # the call's own key, another request
            ]
        ),
        metadata=bearer(setup["key"]),
    )
    outcomes: list[Any] = [
        r.accepted.id if r.HasField("accepted") else (r.error.code, r.error.field, r.error.message)
        for r in answer.results
    ]
    refused = ("INVALID_ARGUMENT", "idempotency-key", KEY_REUSED)
    assert outcomes[1] == outcomes[4] == refused
    assert outcomes[2] == outcomes[3] and outcomes[0] not in (refused, outcomes[2])
    assert sorted(m.to for m in take_queued(settings.broker_url, "db-sms")) == [
        "447700900111",
        "447700900111",
        "447700900123",
    ]


def _mismatches() -> float:
    return REGISTRY.get_sample_value("herald_dispatcher_idempotency_mismatch_total") or 0.0


def test_a_different_request_stored_second_is_dropped_and_counted(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup, settings: Settings
) -> None:
    """Both copies reached the queue before either was stored (ingest could not check): the db dispatcher
    forwards only the first, and counts the second's different request."""
    first, same, other = _message(demo, None), _message(demo, None), _message(demo, None)
    same.id = other.id = first.id
    first.request_hash = same.request_hash = "a" * 32
    other.request_hash, other.to = "b" * 32, "447700900999"
    before = _mismatches()
    _persist(clean_db, publisher, first)
    _persist(clean_db, publisher, same)
    assert _mismatches() == before
    _persist(clean_db, publisher, other)
    assert _mismatches() == before + 1
    take_queued(settings.broker_url, "send-sms")


def test_while_the_database_is_away_a_keyed_send_is_accepted_unchecked(
    setup: dict[str, str], clean_db: Engine, settings: Settings, database_url: str
) -> None:
    """Ingest accepts while the database is away (templates served stale): a keyed send then goes unchecked,
    counted; the db dispatcher still sends only the row stored first."""
    parts = split_key(setup["key"])
    caller = Authenticator(clean_db, SecretBox(settings.secret_key)).authenticate(
        f"Bearer {create_token(parts.secret, parts.service_id)}"
    )
    proxy = TcpProxy(PG_HOST, PG_PORT)
    engine = make_engine(make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False))
    published: list[bytes] = []
    try:
        sender = Sender(engine, lambda _queue, item, _timeout=0.0: published.append(item), "example.org", 0.01, 60.0)
        command = SendCommand(NotificationType.SMS, "07700900123", setup["sms"], {"name": "Ada"})
        sender.send(caller, command)  # the template, cached
        proxy.cut()
        time.sleep(0.02)
        before = REGISTRY.get_sample_value("herald_ingest_idempotency_unchecked_total") or 0.0
        accepted = sender.send(caller, dataclasses.replace(command, idempotency_key="k"))
        assert REGISTRY.get_sample_value("herald_ingest_idempotency_unchecked_total") == before + 1
        assert NotificationMessage.FromString(published[-1]).request_hash
        assert accepted.id == notification_id(parts.service_id, "k")
    finally:
        proxy.close()
        engine.dispose()
