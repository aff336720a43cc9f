"""Inbound-SMS callbacks to services, end to end: a text received through callbacks' ReceiveText is stored by
the inbound-sms dispatcher role and POSTed to the service's own real local HTTP receiver with Notify's body,
the bearer token and a signature that verifies; failures are retried through service-callbacks-retry (its
delay compressed) and given up after Notify's 5 retries; a service without one gets nothing; a batch
handled again queues its callbacks again rather than losing them. Registration through the Admin API and
`herald service-callbacks inbound`."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from herald import bootstrap, cli
from herald.crypto import SecretBox
from herald.db.services import DELIVERY_STATUS, INBOUND_SMS
from herald.domain.apikeys import create_admin_token
from herald.grpcsrv.errors import field_violations
from herald.queues import Delivery, PublishFailed
from herald.queues.deadletter import browse
from herald.queues.topology import DEAD_LETTER, INBOUND_QUEUE, SERVICE_CALLBACK_QUEUE
from herald.service_layer.admin import Admin
from herald.service_layer.errors import InvalidRequest, NotFound
from herald.service_layer.inbound import InboundStorer
from herald.service_layer.senders import Senders
from herald.service_layer.service_callbacks import CallbackSender, CallbackTrigger
from herald.settings import Settings
from herald.v1 import admin_pb2, admin_pb2_grpc, callbacks_pb2, callbacks_pb2_grpc
from herald.v1.queue_pb2 import InboundSms, InboundSmsBatch, ServiceCallback, ServiceCallbackBatch
from tests.support import Receiver, free_port, http_receiver, wait_for

RETRY_SECONDS = 0.5
TOKEN = "an-inbound-bearer-token"
NUMBER = "447700900000"  # the service's inbound number, as inbound_numbers keeps it


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver("/inbound-sms?service=ours") as recorded:
        yield recorded


@pytest.fixture
def local_admin(clean_db: Engine, settings: Settings) -> Admin:
    return Admin(clean_db, SecretBox(settings.secret_key), allow_http_callbacks=True)


@pytest.fixture
def service_id(local_admin: Admin, clean_db: Engine) -> str:
    made = local_admin.create_service(f"inbound callbacks {uuid.uuid4()}")
    Senders(clean_db).set_inbound_number(made, NUMBER)
    return made


@pytest.fixture
def provider(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[callbacks_pb2_grpc.CallbacksStub]:
    """Callbacks (where providers post received texts) and a dispatcher storing them and sending service
    callbacks, the retry delay compressed."""
    s = replace(
        settings,
        callbacks_address=f"127.0.0.1:{free_port()}",
        dispatcher_address=f"127.0.0.1:{free_port()}",
        callback_retry_seconds=RETRY_SECONDS,
        cache_seconds=0.2,
    )
    stops = [
        bootstrap.start_callbacks(s, clean_db),
        bootstrap.start_dispatcher(s, clean_db, (INBOUND_QUEUE, SERVICE_CALLBACK_QUEUE)),
    ]
    try:
        with grpc.insecure_channel(s.callbacks_address) as channel:
            yield callbacks_pb2_grpc.CallbacksStub(channel)
    finally:
        for stop in reversed(stops):
            stop()


def _receive(provider: callbacks_pb2_grpc.CallbacksStub, content: str, provider_date: str = "") -> str:
    text_in = callbacks_pb2.InboundText(
        provider="mmg",
        notify_number="07700 900000",
        user_number="+44 7700 900123",
        content=content,
        provider_date=provider_date,
    )
    return str(provider.ReceiveText(text_in, timeout=30).id)


def _stored_at(engine: Engine, inbound_id: str) -> datetime:
    with engine.connect() as conn:
        created: datetime = conn.execute(
            text("SELECT created_at FROM inbound_sms WHERE id = :id"), {"id": inbound_id}
        ).scalar_one()
    return created


def test_a_received_text_reaches_the_service_s_inbound_receiver_signed_and_not_its_delivery_one(
    provider: callbacks_pb2_grpc.CallbacksStub, local_admin: Admin, service_id: str, clean_db: Engine
) -> None:
    with http_receiver("/inbound") as inbound, http_receiver("/delivery-status") as delivery:
        made = local_admin.set_callback(INBOUND_SMS, service_id, inbound.url, TOKEN)
        local_admin.set_callback(DELIVERY_STATUS, service_id, delivery.url, "a-delivery-status-token")
        dated = _receive(provider, "Yes please 😀", provider_date="2026-06-01 09:30:00")
        undated = _receive(provider, "STOP")
        wait_for(lambda: len(inbound.requests) >= 2)
        by_id = {json.loads(body)["id"]: (headers, body) for headers, body in inbound.requests}
        assert sorted(by_id) == sorted([dated, undated]) and delivery.requests == []
    headers, body = by_id[dated]
    sent = json.loads(body)
    assert list(sent) == ["id", "source_number", "destination_number", "message", "date_received"]
    assert sent == {
        "id": dated,
        "source_number": "447700900123",  # normalised, as Herald stores it
        "destination_number": NUMBER,
        "message": "Yes please 😀",
        "date_received": "2026-06-01T08:30:00.000000Z",  # the provider's London time, in UTC: Notify's format
    }
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    expected = hmac.new(made.signing_secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Herald-Signature"], f"sha256={expected}")
    # No provider date: the time Herald received it, as stored.
    received = _stored_at(clean_db, undated).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert json.loads(by_id[undated][1])["date_received"] == received


def test_a_receiver_that_fails_twice_gets_it_on_the_third_attempt(
    provider: callbacks_pb2_grpc.CallbacksStub, local_admin: Admin, service_id: str, receiver: Receiver
) -> None:
    receiver.answers = [500, 429]
    local_admin.set_callback(INBOUND_SMS, service_id, receiver.url, TOKEN)
    inbound_id = _receive(provider, "hello")
    wait_for(lambda: len(receiver.requests) >= 3, timeout=30)
    bodies = [body for _, body in receiver.requests]
    assert len(set(bodies)) == 1, "every attempt sends the same body"
    assert json.loads(bodies[0])["id"] == inbound_id
    # A later text arriving means the retried one was settled before it: nothing more for the first.
    later = _receive(provider, "again")
    wait_for(lambda: any(json.loads(body)["id"] == later for _, body in receiver.requests))
    assert [json.loads(body)["id"] for _, body in receiver.requests] == [inbound_id] * 3 + [later]


def _dead_callbacks(broker_url: str) -> list[tuple[str, list[tuple[str, int]]]]:
    """(reason, [(id, kind)]) of the service-callbacks dead letters; left on the queue."""
    found: list[tuple[str, list[tuple[str, int]]]] = []
    with browse(broker_url) as letters:
        for letter in letters:
            if letter.queue == SERVICE_CALLBACK_QUEUE:
                batch = ServiceCallbackBatch()
                batch.ParseFromString(letter.body)
                found.append((letter.reason, [(c.id, int(c.kind)) for c in batch.callbacks]))
    return found


def test_a_receiver_that_always_fails_is_given_up_after_five_retries_and_the_text_is_kept(
    provider: callbacks_pb2_grpc.CallbacksStub,
    local_admin: Admin,
    service_id: str,
    receiver: Receiver,
    clean_db: Engine,
    clean_broker: str,
) -> None:
    receiver.answers = [503] * 100
    local_admin.set_callback(INBOUND_SMS, service_id, receiver.url, TOKEN)
    inbound_id = _receive(provider, "hello")
    letters = wait_for(lambda: _dead_callbacks(clean_broker), timeout=40, interval=0.2)
    assert letters == [("callback-gave-up", [(inbound_id, ServiceCallback.INBOUND_SMS)])]
    assert len(receiver.requests) == 6  # the first call and Notify's 5 retries
    assert _stored_at(clean_db, inbound_id)


def test_a_service_without_an_inbound_callback_gets_nothing(
    provider: callbacks_pb2_grpc.CallbacksStub,
    local_admin: Admin,
    service_id: str,
    receiver: Receiver,
    clean_db: Engine,
) -> None:
    other = local_admin.create_service(f"inbound callbacks other {uuid.uuid4()}")
    Senders(clean_db).set_inbound_number(other, "447700900999")
    with http_receiver("/other") as others:
        local_admin.set_callback(DELIVERY_STATUS, service_id, receiver.url, TOKEN)  # a delivery one only
        local_admin.set_callback(INBOUND_SMS, other, others.url, TOKEN)
        unsent = _receive(provider, "to the service without one")
        sent = provider.ReceiveText(
            callbacks_pb2.InboundText(
                provider="firetext", notify_number="447700900999", user_number="07700900123", content="to the other"
            ),
            timeout=30,
        ).id
        # Queued after the first text's turn: had the first had a callback, it would have been sent by now.
        wait_for(lambda: others.requests)
        assert [json.loads(body)["id"] for _, body in others.requests] == [sent]
    assert receiver.requests == []
    assert _stored_at(clean_db, unsent)


@dataclass
class _Message:
    acknowledged: bool = False

    def ack(self) -> None:
        self.acknowledged = True

    def reject(self, requeue: bool = False) -> None:
        raise AssertionError("nothing here is malformed")


@dataclass
class _Publisher:
    """Records what is published; the first `failures` publishes fail as an unreachable broker would."""

    failures: int = 0
    published: list[tuple[str, bytes]] = field(default_factory=list)

    def publish_batch(self, items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise PublishFailed("broker away")
        self.published.extend(items)

    def callbacks(self) -> list[tuple[str, str, str]]:
        found: list[tuple[str, str, str]] = []
        for key, body in self.published:
            batch = ServiceCallbackBatch()
            batch.ParseFromString(body)
            found.extend((key, c.service_id, c.text.content) for c in batch.callbacks)
        return found


def _text(content: str, inbound_id: str = "") -> InboundSms:
    sms = InboundSms(
        id=inbound_id or str(uuid.uuid4()),
        provider="mmg",
        notify_number=NUMBER,
        user_number="447700900123",
        content=content,
    )
    sms.received_at.FromDatetime(datetime.now(UTC))
    return sms


def _delivery(*texts: InboundSms) -> Delivery:
    return Delivery(INBOUND_QUEUE, InboundSmsBatch(texts=texts).SerializeToString(), False, _Message(), {})


def _stored(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id, content FROM inbound_sms ORDER BY content")))


def test_a_failed_publish_keeps_the_batch_and_handling_it_again_queues_each_callback_once_more(
    local_admin: Admin, service_id: str, clean_db: Engine
) -> None:
    local_admin.set_callback(INBOUND_SMS, service_id, "https://example.com/inbound", TOKEN)
    first = _text("first")
    batch = (first, _text("second"), first)  # a text twice in one batch (a replayed dead letter) is one
    publisher = _Publisher(failures=1)
    storer = InboundStorer(clean_db, publisher, CallbackTrigger(publisher, cache_seconds=60))
    failed = _delivery(*batch)
    with pytest.raises(PublishFailed):
        storer([failed])  # stored and committed, its callbacks not published: the consumer keeps it
    assert not failed.message.acknowledged
    assert [r.content for r in _stored(clean_db)] == ["first", "second"]
    again = _delivery(*batch)
    storer([again])  # redelivered: its texts are stored already, and their callbacks are queued now
    assert again.message.acknowledged
    assert [r.content for r in _stored(clean_db)] == ["first", "second"]
    assert sorted(publisher.callbacks()) == [
        (SERVICE_CALLBACK_QUEUE, service_id, "first"),
        (SERVICE_CALLBACK_QUEUE, service_id, "second"),
    ]


def test_a_queued_callback_that_can_never_be_sent_goes_to_dead_letter_and_nothing_is_posted(
    local_admin: Admin, service_id: str, receiver: Receiver, clean_db: Engine, settings: Settings
) -> None:
    local_admin.set_callback(INBOUND_SMS, service_id, receiver.url, TOKEN)
    good = ServiceCallback(service_id=service_id, id=str(uuid.uuid4()), kind=ServiceCallback.INBOUND_SMS)
    good.text.CopyFrom(_text("fine", good.id))
    without_text = ServiceCallback(service_id=service_id, id=str(uuid.uuid4()), kind=ServiceCallback.INBOUND_SMS)
    unknown_kind = ServiceCallback(service_id=service_id, id=str(uuid.uuid4()))
    unknown_kind.kind = 7  # type: ignore[assignment]  # a later Herald's kind, say
    body = ServiceCallbackBatch(callbacks=[without_text, good, unknown_kind]).SerializeToString()
    delivery = Delivery(SERVICE_CALLBACK_QUEUE, body, False, _Message(), {})
    publisher = _Publisher()
    sender = CallbackSender(
        clean_db, SecretBox(settings.secret_key), publisher, concurrency=2, per_receiver=1, cache_seconds=60
    )
    try:
        sender([delivery])
    finally:
        sender.close()
    assert [json.loads(body)["id"] for _, body in receiver.requests] == [good.id]
    [(key, letters)] = publisher.published
    dead = ServiceCallbackBatch()
    dead.ParseFromString(letters)
    assert key == DEAD_LETTER and [c.id for c in dead.callbacks] == [without_text.id, unknown_kind.id]
    assert delivery.message.acknowledged


@pytest.mark.parametrize(
    ("which", "url", "token", "bad_field"),
    [
        ("", "https://example.com/in", TOKEN, "service_id"),
        ("00000000-0000-4000-8000-000000000000", "https://example.com/in", TOKEN, "service_id"),
        (None, "not a url", TOKEN, "url"),
        (None, "http://example.com/in", TOKEN, "url"),  # http outside development
        (None, "https://example.com/in", "too-short", "bearer_token"),
        (None, "https://example.com/in", "has a space in it", "bearer_token"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(
    clean_db: Engine,
    settings: Settings,
    service_id: str,
    which: str | None,
    url: str,
    token: str,
    bad_field: str,
) -> None:
    strict = Admin(clean_db, SecretBox(settings.secret_key))
    before = strict.set_callback(INBOUND_SMS, service_id, "https://example.com/before", TOKEN).callback
    with pytest.raises(InvalidRequest) as raised:
        strict.set_callback(INBOUND_SMS, service_id if which is None else which, url, token)
    assert [f for f, _ in raised.value.violations] == [bad_field]
    assert strict.get_callback(INBOUND_SMS, service_id) == before
    with pytest.raises(NotFound):
        strict.get_callback(DELIVERY_STATUS, service_id)


def test_the_admin_api_and_the_cli_set_show_and_remove_an_inbound_callback_apart_from_the_delivery_one(
    settings: Settings, clean_db: Engine, clean_broker: str, service_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s = replace(settings, ingest_address=f"127.0.0.1:{free_port()}")
    stop = bootstrap.start_ingest(s, clean_db)
    channel = grpc.insecure_channel(s.ingest_address)
    try:
        admin = admin_pb2_grpc.AdminStub(channel)
        metadata = [("authorization", f"Bearer {create_admin_token(s.admin_secret)}")]
        admin.SetDeliveryCallback(
            admin_pb2.SetDeliveryCallbackRequest(
                service_id=service_id, url="https://example.com/delivery", bearer_token=TOKEN
            ),
            metadata=metadata,
        )
        with pytest.raises(grpc.RpcError) as raised:
            admin.SetInboundCallback(
                admin_pb2.SetDeliveryCallbackRequest(service_id=service_id, url="nope", bearer_token=TOKEN),
                metadata=metadata,
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(raised.value)] == ["url"]
        get = admin_pb2.GetDeliveryCallbackRequest(service_id=service_id)
        with pytest.raises(grpc.RpcError) as none:
            admin.GetInboundCallback(get, metadata=metadata)
        assert none.value.code() == grpc.StatusCode.NOT_FOUND

        def herald(*argv: str) -> int:
            return cli.main(["service-callbacks", "inbound", *argv, "--target", s.ingest_address])

        assert herald("set", service_id, "https://example.com/inbound", "--bearer-token", TOKEN, "--json") == 0
        made = json.loads(capsys.readouterr().out)
        assert made["callback"]["url"] == "https://example.com/inbound" and len(made["signing_secret"]) >= 32
        assert herald("show", service_id) == 0
        shown = capsys.readouterr().out
        assert "https://example.com/inbound" in shown and TOKEN not in shown and made["signing_secret"] not in shown
        assert herald("set", service_id, "https://example.com/other", "--bearer-token", "short") == 1
        assert "bearer_token: bearer_token must be at least 10 characters" in capsys.readouterr().err
        assert admin.GetInboundCallback(get, metadata=metadata).url == "https://example.com/inbound"
        assert herald("remove", service_id) == 0
        with pytest.raises(grpc.RpcError) as gone:
            admin.GetInboundCallback(get, metadata=metadata)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        # The delivery-status callback is a registration of its own: untouched throughout.
        assert admin.GetDeliveryCallback(get, metadata=metadata).url == "https://example.com/delivery"
    finally:
        channel.close()
        stop()
