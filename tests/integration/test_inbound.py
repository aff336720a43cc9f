"""Received text messages on the real broker and database: callbacks' ReceiveText makes each durable on
inbound-sms before answering; the inbound-sms dispatcher role stores them against the service that owns the
number (Notify drops a text to a number no service owns, answering the provider OK all the same); pages are
keyset pages; the nightly task deletes them after the service's SMS retention, cut at London midnight."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from herald import bootstrap
from herald.db import inbound as inbound_db
from herald.grpcsrv.errors import field_violations
from herald.grpcsrv.server import Server, ServiceBinding
from herald.queues import ConfirmingPublisher, Delivery, PublisherThread
from herald.queues.topology import DEAD_LETTER, INBOUND_QUEUE
from herald.scheduling import tasks
from herald.service_layer.admin import Admin
from herald.service_layer.inbound import InboundIntake, InboundStorer
from herald.service_layer.receipts import ReceiptIntake
from herald.settings import Settings
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc
from herald.v1.queue_pb2 import InboundSms, InboundSmsBatch
from services.callbacks.servicer import CallbacksServicer
from tests.support import free_port, queue_depth, take_items, wait_for

InboundText = callbacks_pb2.InboundText
NUMBER = "447700900000"  # a service's inbound number, as inbound_numbers keeps it
CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1//"


def own_number(engine: Engine, service_id: str, number: str = NUMBER) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO inbound_numbers (number, service_id) VALUES (:number, :service_id)"),
            {"number": number, "service_id": service_id},
        )


def stored(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT * FROM inbound_sms ORDER BY created_at, id")))


def counted(name: str, provider: str) -> float:
    return REGISTRY.get_sample_value(f"herald_{name}_total", {"provider": provider}) or 0.0


@pytest.fixture
def callbacks(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[callbacks_pb2_grpc.CallbacksStub]:
    own = replace(settings, callbacks_address=f"127.0.0.1:{free_port()}")
    stop = bootstrap.start_callbacks(own, clean_db)
    try:
        with grpc.insecure_channel(own.callbacks_address) as channel:
            yield callbacks_pb2_grpc.CallbacksStub(channel)
    finally:
        stop()


def test_a_text_is_durable_on_inbound_sms_when_answered_its_numbers_normalised(
    callbacks: callbacks_pb2_grpc.CallbacksStub, clean_broker: str
) -> None:
    before = counted("inbound_received", "mmg")
    answer = callbacks.ReceiveText(
        InboundText(
            provider="mmg",
            notify_number="07700 900000",
            user_number="+44 7700 900123",
            content="Yes please 😀",
            provider_reference="mmg-1",
            provider_date="2026-06-01 09:30:00",
        ),
        timeout=30,
    )
    [text_on_queue] = take_items(clean_broker, INBOUND_QUEUE, lambda body: InboundSmsBatch.FromString(body).texts)
    assert text_on_queue.id == answer.id
    assert (text_on_queue.notify_number, text_on_queue.user_number) == (NUMBER, "447700900123")
    assert (text_on_queue.content, text_on_queue.provider_reference) == ("Yes please 😀", "mmg-1")
    # London summer time: 09:30 there is 08:30 UTC.
    assert text_on_queue.provider_date.ToDatetime(tzinfo=UTC) == datetime(2026, 6, 1, 8, 30, tzinfo=UTC)
    assert text_on_queue.HasField("received_at")
    assert counted("inbound_received", "mmg") == before + 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": "twilio"}, "provider"),
        ({"provider": "ses"}, "provider"),
        ({"notify_number": ""}, "notify_number"),
        ({"user_number": "   "}, "user_number"),
        ({"content": "nul \x00 inside"}, "content"),
        ({"content": "x" * 39_016}, "content"),
        ({"provider_date": "last Tuesday"}, "provider_date"),
        ({"provider_reference": "r" * 256}, "provider_reference"),
    ],
)
def test_a_text_that_can_never_be_stored_is_refused_naming_its_field_and_nothing_is_queued(
    callbacks: callbacks_pb2_grpc.CallbacksStub, clean_broker: str, fields: dict[str, str], field: str
) -> None:
    request = {"provider": "firetext", "notify_number": NUMBER, "user_number": "07700900123", "content": "hi"}
    with pytest.raises(grpc.RpcError) as err:
        callbacks.ReceiveText(InboundText(**(request | fields)), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(err.value)] == [field]
    assert queue_depth(clean_broker, INBOUND_QUEUE) == 0


def test_broker_down_is_unavailable_so_the_provider_posts_again(clean_broker: str) -> None:
    down = PublisherThread(CLOSED_BROKER, retry_for=0.2, confirm_timeout=1.0)
    servicer = CallbacksServicer(ReceiptIntake(down.publish), InboundIntake(down.publish))
    server = Server("127.0.0.1:0", [ServiceBinding(servicer, callbacks_pb2_grpc.add_CallbacksServicer_to_server, "x")])
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = callbacks_pb2_grpc.CallbacksStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.ReceiveText(
                    InboundText(provider="mmg", notify_number=NUMBER, user_number="07700900123", content="hi"),
                    timeout=60,
                )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=1.0)
        down.close()


def test_the_dispatcher_stores_texts_for_the_number_s_service_and_drops_those_no_service_owns(
    settings: Settings, admin: Admin, clean_db: Engine, callbacks: callbacks_pb2_grpc.CallbacksStub, clean_broker: str
) -> None:
    engine = clean_db
    service_id = admin.create_service(f"inbound {uuid.uuid4()}")
    own_number(engine, service_id)
    own = replace(settings, dispatcher_address=f"127.0.0.1:{free_port()}")
    stop = bootstrap.start_dispatcher(own, engine, (INBOUND_QUEUE,))
    try:
        dropped_before = counted("inbound_unknown_number", "firetext")
        kept = callbacks.ReceiveText(
            InboundText(provider="firetext", notify_number="+447700900000", user_number="07700900123", content="A"),
            timeout=30,
        )
        callbacks.ReceiveText(
            InboundText(provider="firetext", notify_number="447700900999", user_number="07700900123", content="B"),
            timeout=30,
        )
        wait_for(lambda: counted("inbound_unknown_number", "firetext") > dropped_before or None)
        wait_for(lambda: stored(engine) or None)
    finally:
        stop()
    [row] = stored(engine)
    assert (str(row.id), str(row.service_id), row.notify_number) == (kept.id, service_id, NUMBER)
    assert (row.user_number, row.content, row.provider, row.provider_reference) == (
        "447700900123",
        "A",
        "firetext",
        None,
    )
    assert row.provider_date is None
    assert queue_depth(clean_broker, INBOUND_QUEUE) == 0


@dataclass
class _Message:
    acknowledged: bool = False
    rejected: bool = False

    def ack(self) -> None:
        self.acknowledged = True

    def reject(self, requeue: bool = False) -> None:
        self.rejected = True


def _delivery(*texts: InboundSms) -> Delivery:
    return Delivery(INBOUND_QUEUE, InboundSmsBatch(texts=texts).SerializeToString(), False, _Message(), {})


def _text(content: str, number: str = NUMBER) -> InboundSms:
    sms = InboundSms(
        id=str(uuid.uuid4()), provider="mmg", notify_number=number, user_number="447700900123", content=content
    )
    sms.received_at.FromDatetime(datetime.now(UTC))
    return sms


def test_a_batch_handled_twice_stores_each_text_once_and_a_bad_one_goes_to_dead_letter(
    admin: Admin, clean_db: Engine, clean_broker: str
) -> None:
    engine = clean_db
    own_number(engine, admin.create_service(f"inbound {uuid.uuid4()}"))
    good, bad = _text("first"), _text("nul \x00")
    publisher = ConfirmingPublisher(clean_broker)
    try:
        storer = InboundStorer(engine, publisher)
        first, again = _delivery(good, bad), _delivery(good, bad)
        storer([first])
        storer([again])  # redelivered after a crash between the commit and the ack
    finally:
        publisher.close()
    assert [r.content for r in stored(engine)] == ["first"]
    assert first.message.acknowledged and again.message.acknowledged
    assert queue_depth(clean_broker, DEAD_LETTER) == 2


def test_an_undecodable_message_is_rejected_and_nothing_stored(clean_db: Engine, clean_broker: str) -> None:
    engine = clean_db
    delivery = Delivery(INBOUND_QUEUE, b"\xff\xff not protobuf", False, _Message(), {})
    publisher = ConfirmingPublisher(clean_broker)
    try:
        InboundStorer(engine, publisher)([delivery])
    finally:
        publisher.close()
    assert delivery.message.rejected and not stored(engine)


def _insert(engine: Engine, service_id: str, created: list[datetime]) -> list[str]:
    rows = [
        {
            "id": str(uuid.uuid4()),
            "service_id": service_id,
            "notify_number": NUMBER,
            "user_number": "447700900123",
            "content": f"text {i}",
            "provider_date": None,
            "provider_reference": None,
            "provider": "mmg",
            "created_at": at,
        }
        for i, at in enumerate(created)
    ]
    with engine.begin() as conn:
        inbound_db.insert_texts(conn, rows)
    return [str(r["id"]) for r in rows]


def test_pages_are_newest_first_250_at_a_time_by_keyset_and_only_the_service_s_own(
    admin: Admin, clean_db: Engine
) -> None:
    engine = clean_db
    service_id = admin.create_service(f"inbound {uuid.uuid4()}")
    other = admin.create_service(f"inbound other {uuid.uuid4()}")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    # 260 texts, pairs sharing a created_at, so that the cursor must break ties by id.
    ids = _insert(engine, service_id, [start + timedelta(seconds=i // 2) for i in range(260)])
    other_id = _insert(engine, other, [start] * 3)[0]
    with engine.connect() as conn:
        first = inbound_db.page(conn, service_id, "", 250)
        second = inbound_db.page(conn, service_id, first[-1].id, 250)
        last = inbound_db.page(conn, service_id, second[-1].id, 250)
        unknown = inbound_db.page(conn, service_id, str(uuid.uuid4()), 250)
        others = inbound_db.page(conn, service_id, other_id, 250)
    listed = [t.id for t in first + second]
    assert (len(first), len(second), last) == (250, 10, [])
    assert sorted(listed) == sorted(ids) and len(set(listed)) == 260
    assert [(t.created_at, t.id) for t in first + second] == sorted(
        ((t.created_at, t.id) for t in first + second), reverse=True
    )
    assert {t.service_id for t in first + second} == {service_id}
    assert unknown == [] and others == []  # another service's text is no cursor here (Notify: empty page)


def test_received_texts_are_deleted_after_the_service_s_sms_retention_cut_at_london_midnight(
    admin: Admin, clean_db: Engine
) -> None:
    engine = clean_db
    default = admin.create_service(f"inbound default {uuid.uuid4()}")
    short = admin.create_service(f"inbound short {uuid.uuid4()}")
    admin.update_service(short, retention={"sms_data_retention_days": 3})
    admin.update_service(default, retention={"email_data_retention_days": 3})  # email's retention is not SMS's
    now = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # British summer time: London midnight is 23:00 UTC
    week_cutoff = datetime(2026, 6, 2, 23, 0, tzinfo=UTC)  # midnight starting 3 June, London
    three_day_cutoff = datetime(2026, 6, 6, 23, 0, tzinfo=UTC)
    tick = timedelta(microseconds=1)
    kept_default = _insert(engine, default, [week_cutoff, now])
    _insert(engine, default, [week_cutoff - tick, now - timedelta(days=30)])
    kept_short = _insert(engine, short, [three_day_cutoff, now])
    _insert(engine, short, [three_day_cutoff - tick, week_cutoff])
    summary = tasks.delete_inbound_sms(engine, now, retention_days=7)
    assert summary == "deleted 4"
    assert sorted(str(r.id) for r in stored(engine)) == sorted(kept_default + kept_short)
    assert tasks.delete_inbound_sms(engine, now, retention_days=7) == "deleted 0"
