"""One process, real PostgreSQL and RabbitMQ: ingest -> db-* -> send-* -> provider simulator -> callbacks."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from herald import bootstrap, metrics
from herald.clients import IngestClient
from herald.grpcsrv.errors import field_violations
from herald.providers.simulator import ProviderSimulator
from herald.queues import ConfirmingPublisher
from herald.queues.codec import pack
from herald.queues.topology import ALL_QUEUES, DEAD_LETTER, queue
from herald.scheduling.tasks import replay_created_notifications
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.delivery import Republisher
from herald.settings import Settings
from herald.v1 import ingest_pb2
from herald.v1.notifications_pb2 import KeyType, NotificationType
from herald.v1.queue_pb2 import NotificationMessage
from tests.support import final_status, free_port, wait_for


@pytest.fixture
def stack(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[tuple[Settings, ProviderSimulator]]:
    ports = {name: free_port() for name in ("ingest", "callbacks", "dispatcher")}
    s = replace(
        settings,
        ingest_address=f"127.0.0.1:{ports['ingest']}",
        callbacks_address=f"127.0.0.1:{ports['callbacks']}",
        dispatcher_address=f"127.0.0.1:{ports['dispatcher']}",
    )
    sim = ProviderSimulator("127.0.0.1", 0, s.callbacks_address, 0.05)
    sim.start()
    base = f"http://127.0.0.1:{sim.port}"
    s = replace(s, mmg_url=base, firetext_url=base, ses_url=base)
    stops = [
        bootstrap.start_callbacks(s, clean_db),
        bootstrap.start_dispatcher(s, clean_db, bootstrap.ALL_QUEUES_DISPATCHED),
        bootstrap.start_ingest(s, clean_db),
    ]
    yield s, sim
    for stop in reversed(stops):
        stop()
    sim.stop()


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("flow")


def test_live_sms_and_email_are_delivered(stack: tuple[Settings, ProviderSimulator], demo: DemoSetup) -> None:
    settings, sim = stack
    client = IngestClient(settings.ingest_address, demo.live_key)
    sms = client.send_sms("07700 900123", demo.sms_template_id, {"name": "Ada", "code": "1"})
    email = client.send_email("someone@example.com", demo.email_template_id, {"name": "Ada", "code": "2"})
    assert sms.body == "Hello Ada, your code is 1."
    assert final_status(client, sms.id) == "delivered"
    assert final_status(client, email.id) == "delivered"
    stats = httpx.get(f"http://127.0.0.1:{sim.port}/_stats").json()
    assert stats["sends"] == {sms.id: 1, email.id: 1}


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("07833333333", "temporary-failure"),
        ("07822222222", "permanent-failure"),
        ("07811111111", "delivered"),
    ],
)
def test_research_mode_sms_outcomes(
    stack: tuple[Settings, ProviderSimulator], demo: DemoSetup, to: str, expected: str
) -> None:
    settings, sim = stack
    client = IngestClient(settings.ingest_address, demo.research_key)
    sent = client.send_sms(to, demo.research_sms_template_id, {"name": "x", "code": "1"})
    assert final_status(client, sent.id) == expected
    assert httpx.get(f"http://127.0.0.1:{sim.port}/_stats").json()["total"] == 0


def test_bad_input_changes_nothing(
    stack: tuple[Settings, ProviderSimulator], demo: DemoSetup, clean_db: Engine
) -> None:
    settings, _ = stack
    client = IngestClient(settings.ingest_address, demo.live_key)
    with pytest.raises(grpc.RpcError) as bad_number:
        client.send_sms("not a number", demo.sms_template_id, {"name": "x", "code": "1"})
    assert bad_number.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad_number.value)[0][0] == "phone_number"
    with pytest.raises(grpc.RpcError) as other_service:
        client.send_sms("07700900123", demo.research_sms_template_id, {"name": "x", "code": "1"})
    assert other_service.value.details() == "Template not found"
    with pytest.raises(grpc.RpcError) as missing:
        client.send_sms("07700900123", demo.sms_template_id, {})
    assert missing.value.details() == "Missing personalisation: name, code"
    bad_key = IngestClient(settings.ingest_address, demo.live_key[:-5] + "00000")
    with pytest.raises(grpc.RpcError) as unauthorised:
        bad_key.send_sms("07700900123", demo.sms_template_id, {"name": "x", "code": "1"})
    assert unauthorised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert unauthorised.value.details() == "Invalid token: API key not found"
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM notifications")) == 0


def test_replay_publishes_a_stuck_created_notification(
    stack: tuple[Settings, ProviderSimulator], demo: DemoSetup, clean_db: Engine
) -> None:
    """A row stored but never published to send-* (say, a crash and a lost redelivery) is replayed."""
    settings, sim = stack
    stuck = "11111111-2222-3333-4444-555555555555"
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                ' notification_type, "to", body, status, billable_units, created_at)'
                " VALUES (:id, :s, :t, 1, 'normal', 'sms', '447700900123', 'Hi', 'created', 1, :at)"
            ),
            {"id": stuck, "s": demo.service_id, "t": demo.sms_template_id,
             "at": datetime.now(UTC) - timedelta(hours=2)},
        )  # fmt: skip
    publisher = ConfirmingPublisher(settings.broker_url)
    summary = replay_created_notifications(
        clean_db, datetime.now(UTC), republish=Republisher(publisher, settings.email_domain)
    )
    publisher.close()
    assert summary == "republished 1"
    client = IngestClient(settings.ingest_address, demo.live_key)
    assert final_status(client, stuck) == "delivered"
    assert httpx.get(f"http://127.0.0.1:{sim.port}/_stats").json()["sends"] == {stuck: 1}


def test_poison_messages_are_dead_lettered_and_their_neighbours_stored(
    stack: tuple[Settings, ProviderSimulator], demo: DemoSetup, clean_db: Engine
) -> None:
    """An undecodable body and a message whose template does not exist go to dead-letter, not away, and
    do not hold up the good message in the same batch."""
    settings, _ = stack

    def message(template_id: str) -> NotificationMessage:
        m = NotificationMessage(
            id=str(uuid.uuid4()),
            service_id=demo.service_id,
            template_id=template_id,
            template_version=1,
            type=NotificationType.SMS,
            to="447700900123",
            body="Hi",
            key_type=KeyType.NORMAL,
            sender="Herald",
        )
        m.created_at.GetCurrentTime()
        return m

    good, orphan = message(demo.sms_template_id), message(str(uuid.uuid4()))
    publisher = ConfirmingPublisher(settings.broker_url)
    publisher.publish_batch(
        [("db-sms", b"\xff not protobuf"), ("db-sms", pack([orphan.SerializeToString(), good.SerializeToString()]))]
    )
    publisher.close()
    client = IngestClient(settings.ingest_address, demo.live_key)
    assert final_status(client, good.id) == "delivered"

    def dead_letters() -> list[bytes] | None:
        with Connection(settings.broker_url) as conn:
            dead = queue(DEAD_LETTER)(conn.default_channel)
            bodies = [bytes(m.body) for m in iter(lambda: dead.get(no_ack=False), None)]
        return bodies if len(bodies) == 2 else None

    # The undecodable body is dead-lettered whole by the broker; the orphan alone, as a batch of one.
    assert sorted(wait_for(dead_letters, timeout=10)) == sorted(
        [b"\xff not protobuf", pack([orphan.SerializeToString()])]
    )
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM notifications")) == 1


def test_a_send_message_that_can_never_be_handled_is_dead_lettered(
    stack: tuple[Settings, ProviderSimulator], clean_db: Engine
) -> None:
    """Well-formed protobuf without a type: it goes to dead-letter instead of being requeued for ever."""
    settings, _ = stack
    body = pack([NotificationMessage(id=str(uuid.uuid4())).SerializeToString()])
    publisher = ConfirmingPublisher(settings.broker_url)
    publisher.publish_batch([("send-sms", body)])
    publisher.close()

    def dead_lettered() -> bytes | None:
        with Connection(settings.broker_url) as conn:
            message = queue(DEAD_LETTER)(conn.default_channel).get(no_ack=True)
            return None if message is None else bytes(message.body)

    assert wait_for(dead_lettered, timeout=10) == body


def test_queues_are_quorum_queues_by_default(stack: tuple[Settings, ProviderSimulator]) -> None:
    """The flow above ran on quorum queues (replicated on a cluster), dead-lettering included."""
    settings, _ = stack
    vhost = settings.broker_url.rsplit("/", 1)[1] or "/"
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-p", vhost, "name", "type", "--quiet", "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    types = dict(line.split() for line in listed.strip().splitlines())
    # The callback dispatcher also declares its delay queue (service-callbacks-retry) of its own.
    assert set(ALL_QUEUES) <= set(types)
    assert set(types.values()) == {"quorum"}


def test_statsd_names_of_a_send_that_goes_end_to_end(
    stack: tuple[Settings, ProviderSimulator], demo: DemoSetup
) -> None:
    """The seed's statsd names, on a real UDP socket, for one live SMS from the API call to its receipt."""
    settings, _ = stack
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    metrics.configure("test", "herald", "127.0.0.1", listener.getsockname()[1], 0, statsd_enabled=True)
    try:
        client = IngestClient(settings.ingest_address, demo.live_key)
        sent = client.send_sms("07700900123", demo.sms_template_id, {"name": "Ada", "code": "1"})
        assert final_status(client, sent.id) == "delivered"
        names: set[str] = set()
        with contextlib.suppress(TimeoutError):
            while True:
                for line in listener.recv(65535).decode().splitlines():
                    names.add(line.split(":", 1)[0] + "|" + line.rsplit("|", 1)[1])
    finally:
        metrics.configure("test", "herald", "", 0, 0, statsd_enabled=False)
        listener.close()
    prefix = "test.notifications.herald."
    expected = {
        "api.Ingest.SendSms.OK|c",  # request metrics, as the seed builds them for HTTP
        "api.Ingest.SendSms.OK|ms",
        "api.accepted.sms.normal|c",  # API calls accepted per type
        "queue_wait.db-sms|ms",  # how long a message waited on each queue
        "queue_wait.send-sms|ms",
        "queue_wait.sms-callbacks|ms",
        "dao.notifications.insert_batch|c",  # the decorator on every notifications DAO function
        "dao.notifications.insert_batch|ms",
        "dao.notifications.claim|c",
        "dao.notifications.apply_moves|c",
        "service_layer.delivery.Persister.__call__|c",  # task successes
        "service_layer.delivery.Deliverer.__call__|c",
        "service_layer.receipts.ReceiptApplier.__call__|c",
    }
    assert {prefix + name for name in expected} <= names, sorted(names)
    # The SMS went to MMG or Firetext, as the rotation chose: its hand-off, call timing and receipt.
    [provider] = [p for p in ("mmg", "firetext") if f"{prefix}provider_handoffs.{p}.ok|c" in names]
    assert f"{prefix}clients.request-time.{provider}|ms" in names
    assert f"{prefix}callback.{provider}.delivered|c" in names  # receipts per provider and mapped status
    assert not any("447700900123" in name for name in names)


def test_a_batch_answers_each_item_on_its_own_and_delivers_the_accepted(
    stack: tuple[Settings, ProviderSimulator], demo: DemoSetup, clean_db: Engine
) -> None:
    settings, _ = stack
    client = IngestClient(settings.ingest_address, demo.research_key)

    def item(to: str, idempotency_key: str = "") -> ingest_pb2.SendSmsRequest:
        request = ingest_pb2.SendSmsRequest(
            phone_number=to, template_id=demo.research_sms_template_id, idempotency_key=idempotency_key
        )
        request.personalisation.update({"name": "Ada", "code": "1"})
        return request

    missing = ingest_pb2.SendSmsRequest(phone_number="07700900123", template_id=demo.research_sms_template_id)
    answer = client.send_sms_batch(
        [
            item("07700900001"),
            item("not a number"),
            missing,
            item("07822222222"),
            item("07700900002", idempotency_key="k"),
        ]
    )
    outcomes = [r.WhichOneof("outcome") for r in answer.results]
    assert outcomes == ["accepted", "error", "error", "accepted", "accepted"]
    assert (answer.results[1].error.code, answer.results[1].error.field) == ("INVALID_ARGUMENT", "phone_number")
    assert answer.results[2].error.message == "Missing personalisation: name, code"
    ids = [r.accepted.id for r in answer.results if r.HasField("accepted")]
    assert [final_status(client, i) for i in ids] == ["delivered", "permanent-failure", "delivered"]
    # The same idempotency key again: the same notification, not a second one.
    again = client.send_sms_batch([item("07700900002", idempotency_key="k")])
    assert again.results[0].accepted.id == ids[2]
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM notifications")) == 3

    with pytest.raises(grpc.RpcError) as too_many:
        client.send_sms_batch([item("07700900001")] * 1001)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
