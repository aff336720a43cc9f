"""Delivery-status callbacks to services, end to end: a notification delivered through the simulator reaches a
real local HTTP receiver with Notify's body, the bearer token and a signature that verifies; failures are
retried through service-callbacks-retry (its delay compressed) and given up after Notify's 5 retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from herald import bootstrap
from herald.clients import IngestClient
from herald.crypto import SecretBox
from herald.db import notifications as notifications_db
from herald.db.services import DELIVERY_STATUS
from herald.domain.apikeys import create_admin_token
from herald.grpcsrv.errors import field_violations
from herald.queues.deadletter import browse
from herald.queues.topology import SERVICE_CALLBACK_QUEUE, callback_retry_queue
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.errors import InvalidRequest, NotFound
from herald.service_layer.receipts import apply, apply_pending
from herald.service_layer.service_callbacks import CallbackTrigger
from herald.settings import Settings
from herald.v1 import admin_pb2, admin_pb2_grpc
from herald.v1.queue_pb2 import Receipt, ServiceCallbackBatch
from tests.support import Receiver, Stack, final_status, free_port, http_receiver, running_stack, wait_for

RETRY_SECONDS = 0.5
TOKEN = "a-bearer-token-of-the-service"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver("/delivery-status?service=ours") as recorded:
        yield recorded


@pytest.fixture
def stack(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[Stack]:
    s = replace(settings, callback_retry_seconds=RETRY_SECONDS, cache_seconds=0.2)
    with Connection(s.broker_url) as conn:
        callback_retry_queue(RETRY_SECONDS)(conn.default_channel).declare()
        callback_retry_queue(RETRY_SECONDS)(conn.default_channel).purge()
    with running_stack(s, clean_db) as running:
        # bootstrap's every-queue dispatcher does not consume service-callbacks: one of its own here.
        own = replace(running.settings, dispatcher_address=f"127.0.0.1:{free_port()}")
        stop = bootstrap.start_dispatcher(own, clean_db, (SERVICE_CALLBACK_QUEUE,))
        try:
            yield running
        finally:
            stop()


@pytest.fixture
def local_admin(clean_db: Engine, settings: Settings) -> Admin:
    return Admin(clean_db, SecretBox(settings.secret_key), allow_http_callbacks=True)


@pytest.fixture
def demo(local_admin: Admin) -> DemoSetup:
    return local_admin.demo("callbacks")


def _send_and_finish(stack: Stack, demo: DemoSetup) -> str:
    client = IngestClient(stack.settings.ingest_address, demo.live_key)
    sent = client.send_sms("07700 900123", demo.sms_template_id, {"name": "Ada", "code": "1"}, reference="ref-1")
    assert final_status(client, sent.id) == "delivered"
    return sent.id


def test_a_delivered_notification_reaches_the_receiver_signed(
    stack: Stack, demo: DemoSetup, local_admin: Admin, receiver: Receiver
) -> None:
    made = local_admin.set_callback(DELIVERY_STATUS, demo.service_id, receiver.url, TOKEN)
    notification_id = _send_and_finish(stack, demo)
    headers, body = wait_for(lambda: receiver.requests[0] if receiver.requests else None)
    sent = json.loads(body)
    assert sent["id"] == notification_id
    assert sent["reference"] == "ref-1"
    assert sent["to"] == "447700900123"  # as Herald stores it, normalised
    assert sent["status"] == "delivered"
    assert sent["notification_type"] == "sms"
    assert sent["template_id"] == demo.sms_template_id
    assert sent["template_version"] == 1
    assert list(sent) == [
        "id",
        "reference",
        "to",
        "status",
        "created_at",
        "completed_at",
        "sent_at",
        "notification_type",
        "template_id",
        "template_version",
    ]
    for stamp in ("created_at", "completed_at", "sent_at"):
        assert sent[stamp].endswith("Z") and len(sent[stamp]) == len("2026-01-01T00:00:00.000000Z")
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    expected = hmac.new(made.signing_secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Herald-Signature"], f"sha256={expected}")


def test_a_receiver_that_fails_twice_gets_it_on_the_third_attempt(
    stack: Stack, demo: DemoSetup, local_admin: Admin, receiver: Receiver
) -> None:
    receiver.answers = [500, 429]
    local_admin.set_callback(DELIVERY_STATUS, demo.service_id, receiver.url, TOKEN)
    notification_id = _send_and_finish(stack, demo)
    wait_for(lambda: len(receiver.requests) >= 3, timeout=30)
    bodies = [body for _, body in receiver.requests]
    assert len(set(bodies)) == 1, "every attempt sends the same body"
    assert json.loads(bodies[0])["id"] == notification_id
    time.sleep(3 * RETRY_SECONDS)
    assert len(receiver.requests) == 3, "nothing more once the receiver took it"


def _dead_letters(broker_url: str) -> list[tuple[str, str, list[str]]]:
    """(queue, reason, notification ids) of the service-callbacks dead letters; left on the queue."""
    found = []
    with browse(broker_url) as letters:
        for letter in letters:
            if letter.queue == SERVICE_CALLBACK_QUEUE:
                batch = ServiceCallbackBatch()
                batch.ParseFromString(letter.body)
                found.append((letter.queue, letter.reason, [c.id for c in batch.callbacks]))
    return found


def test_a_receiver_that_always_fails_is_given_up_after_five_retries(
    stack: Stack, demo: DemoSetup, local_admin: Admin, receiver: Receiver
) -> None:
    receiver.answers = [503] * 100
    local_admin.set_callback(DELIVERY_STATUS, demo.service_id, receiver.url, TOKEN)
    notification_id = _send_and_finish(stack, demo)
    letters = wait_for(lambda: _dead_letters(stack.settings.broker_url), timeout=40, interval=0.2)
    assert letters == [(SERVICE_CALLBACK_QUEUE, "callback-gave-up", [notification_id])]
    assert len(receiver.requests) == 6  # the first call and Notify's 5 retries


def test_a_4xx_other_than_429_is_not_retried(
    stack: Stack, demo: DemoSetup, local_admin: Admin, receiver: Receiver
) -> None:
    receiver.answers = [400]
    local_admin.set_callback(DELIVERY_STATUS, demo.service_id, receiver.url, TOKEN)
    notification_id = _send_and_finish(stack, demo)
    letters = wait_for(lambda: _dead_letters(stack.settings.broker_url), timeout=20, interval=0.2)
    assert letters == [(SERVICE_CALLBACK_QUEUE, "callback-gave-up", [notification_id])]
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("service_id", "url", "token", "bad_field"),
    [
        ("", "https://example.com/cb", TOKEN, "service_id"),
        ("00000000-0000-4000-8000-000000000000", "https://example.com/cb", TOKEN, "service_id"),
        (None, "not a url", TOKEN, "url"),
        (None, "ftp://example.com/cb", TOKEN, "url"),
        (None, "https:///no-host", TOKEN, "url"),
        (None, "http://example.com/cb", TOKEN, "url"),  # http outside development
        (None, "https://example.com/cb", "too-short", "bearer_token"),
        (None, "https://example.com/cb", "has a space in it", "bearer_token"),
    ],
)
def test_bad_callback_input_names_the_field_and_changes_nothing(
    clean_db: Engine, settings: Settings, demo: DemoSetup, service_id: str | None, url: str, token: str, bad_field: str
) -> None:
    strict = Admin(clean_db, SecretBox(settings.secret_key))
    with pytest.raises(InvalidRequest) as raised:
        strict.set_callback(DELIVERY_STATUS, demo.service_id if service_id is None else service_id, url, token)
    assert [f for f, _ in raised.value.violations] == [bad_field]
    with pytest.raises(NotFound):
        strict.get_callback(DELIVERY_STATUS, demo.service_id)


def test_the_admin_api_sets_shows_and_removes_a_callback_without_its_token(stack: Stack, demo: DemoSetup) -> None:
    channel = grpc.insecure_channel(stack.settings.ingest_address)
    admin = admin_pb2_grpc.AdminStub(channel)
    metadata = [("authorization", f"Bearer {create_admin_token(stack.settings.admin_secret)}")]
    with pytest.raises(grpc.RpcError) as raised:
        admin.SetDeliveryCallback(
            admin_pb2.SetDeliveryCallbackRequest(service_id=demo.service_id, url="nope", bearer_token=TOKEN),
            metadata=metadata,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(raised.value)] == ["url"]
    request = admin_pb2.SetDeliveryCallbackRequest(
        service_id=demo.service_id, url="https://example.com/cb", bearer_token=TOKEN
    )
    made = admin.SetDeliveryCallback(request, metadata=metadata)
    assert len(made.signing_secret) >= 32
    shown = admin.GetDeliveryCallback(
        admin_pb2.GetDeliveryCallbackRequest(service_id=demo.service_id), metadata=metadata
    )
    assert shown.url == "https://example.com/cb"
    assert TOKEN not in str(shown) and made.signing_secret not in str(shown)
    admin.RemoveDeliveryCallback(admin_pb2.GetDeliveryCallbackRequest(service_id=demo.service_id), metadata=metadata)
    with pytest.raises(grpc.RpcError) as gone:
        admin.GetDeliveryCallback(admin_pb2.GetDeliveryCallbackRequest(service_id=demo.service_id), metadata=metadata)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    channel.close()


@dataclass
class RecordingPublisher:
    published: list[tuple[str, bytes]] = field(default_factory=list)

    def publish_batch(self, items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None:
        self.published.extend(items)

    def callbacks(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for key, body in self.published:
            batch = ServiceCallbackBatch()
            batch.ParseFromString(body)
            found.extend((key, f"{c.id} {c.status} {c.reference}") for c in batch.callbacks)
        return found


def _stored_in_flight(engine: Engine, demo: DemoSetup, service_id: str) -> str:
    notification_id = str(uuid.uuid4())
    created = datetime.now(UTC) - timedelta(minutes=1)
    row = {
        "id": notification_id,
        "service_id": service_id,
        "template_id": demo.sms_template_id if service_id == demo.service_id else demo.research_sms_template_id,
        "template_version": 1,
        "key_type": "normal",
        "notification_type": "sms",
        "to": "447700900123",
        "body": "Hi",
        "subject": None,
        "reference": "ref-9",
        "status": "sending",
        "billable_units": 1,
        "sent_by": "mmg",
        "created_at": created,
        "sent_at": created,
        "updated_at": created,
    }
    with engine.begin() as conn:
        notifications_db.insert_batch(conn, [row])
    return notification_id


def _receipt(notification_id: str, status: str = "3") -> Receipt:  # MMG's delivered
    receipt = Receipt(provider="mmg", reference=notification_id, status=status)
    receipt.received_at.FromDatetime(datetime.now(UTC))
    return receipt


def test_only_services_with_a_callback_get_one_and_a_repeated_final_receipt_repeats_it(
    clean_db: Engine, demo: DemoSetup, local_admin: Admin
) -> None:
    local_admin.set_callback(DELIVERY_STATUS, demo.service_id, "https://example.com/cb", TOKEN)
    with_callback = _stored_in_flight(clean_db, demo, demo.service_id)
    without = _stored_in_flight(clean_db, demo, demo.research_service_id)
    publisher = RecordingPublisher()
    trigger = CallbackTrigger(publisher, cache_seconds=60)
    for _ in range(2):  # the second time, as a batch handled again after its publish failed
        finals: set[str] = set()
        with clean_db.begin() as conn:
            apply(conn, [_receipt(with_callback), _receipt(without)], datetime.now(UTC), finals)
            callbacks = trigger.collect(conn, sorted(finals))
        assert finals == {with_callback, without}
        trigger.publish(callbacks)
    assert publisher.callbacks() == [(SERVICE_CALLBACK_QUEUE, f"{with_callback} delivered ref-9")] * 2


def test_early_receipts_applied_by_the_scheduler_queue_their_callbacks(
    clean_db: Engine, demo: DemoSetup, local_admin: Admin
) -> None:
    local_admin.set_callback(DELIVERY_STATUS, demo.service_id, "https://example.com/cb", TOKEN)
    notification_id = _stored_in_flight(clean_db, demo, demo.service_id)
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE receipts_pending"))
        notifications_db.insert_pending_receipts(
            conn,
            [
                {
                    "notification_id": notification_id,
                    "provider": "mmg",
                    "status": "5",  # MMG's permanent failure
                    "code": "",
                    "received_at": datetime.now(UTC),
                }
            ],
        )
    publisher = RecordingPublisher()
    assert apply_pending(clean_db, datetime.now(UTC), 100, CallbackTrigger(publisher, 60)) == (1, 0)
    assert publisher.callbacks() == [(SERVICE_CALLBACK_QUEUE, f"{notification_id} permanent-failure ref-9")]
