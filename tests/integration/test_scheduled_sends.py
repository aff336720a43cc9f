"""A single message with `scheduled_for`: Notify's rule (in the future, at most 24 hours ahead) checked by
ingest, the time carried on the queue message and answered at once; and the whole path, where the message
is stored now and handed off when due, not before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine, text

from herald.clients import IngestClient
from herald.grpcsrv.errors import field_violations
from herald.queues import ConfirmingPublisher
from herald.scheduling import tasks
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.delivery import Republisher
from herald.settings import Settings
from herald.v1 import ingest_pb2, ingest_pb2_grpc
from herald.v1.ingest_pb2_grpc import IngestStub
from tests.support import Stack, bearer, final_status, running_stack, take_queued, wait_for


@pytest.fixture
def demo(admin: Admin, clean_broker: str) -> DemoSetup:
    return admin.demo("scheduled")


def _at(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _sms(demo: DemoSetup, when: Timestamp | None) -> ingest_pb2.SendSmsRequest:
    request = ingest_pb2.SendSmsRequest(
        phone_number="07700900123", template_id=demo.sms_template_id, scheduled_for=when
    )
    request.personalisation.update({"name": "Ada", "code": "1"})
    return request


def test_a_scheduled_sms_is_answered_at_once_with_its_time_on_the_message(
    ingest_stub: IngestStub, demo: DemoSetup, settings: Settings
) -> None:
    when = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    answer = ingest_stub.SendSms(_sms(demo, _at(when)), metadata=bearer(demo.live_key))
    assert answer.scheduled_for.ToDatetime(tzinfo=UTC) == when
    [message] = take_queued(settings.broker_url, "db-sms")
    assert (message.id, message.scheduled_for.ToDatetime(tzinfo=UTC)) == (answer.id, when)


def test_a_scheduled_email_carries_its_time_too(ingest_stub: IngestStub, demo: DemoSetup, settings: Settings) -> None:
    when = (datetime.now(UTC) + timedelta(hours=23)).replace(microsecond=0)
    request = ingest_pb2.SendEmailRequest(
        email_address="ada@example.com", template_id=demo.email_template_id, scheduled_for=_at(when)
    )
    request.personalisation.update({"name": "Ada", "code": "1"})
    answer = ingest_stub.SendEmail(request, metadata=bearer(demo.live_key))
    assert answer.scheduled_for.ToDatetime(tzinfo=UTC) == when
    [message] = take_queued(settings.broker_url, "db-email")
    assert message.scheduled_for.ToDatetime(tzinfo=UTC) == when


def test_an_unscheduled_send_has_no_time(ingest_stub: IngestStub, demo: DemoSetup, settings: Settings) -> None:
    answer = ingest_stub.SendSms(_sms(demo, None), metadata=bearer(demo.live_key))
    assert not answer.HasField("scheduled_for")
    [message] = take_queued(settings.broker_url, "db-sms")
    assert not message.HasField("scheduled_for")


def _far(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (lambda: _at(datetime.now(UTC) - timedelta(minutes=1)), "scheduled_for datetime can not be in the past"),
        (
            lambda: _at(datetime.now(UTC) + timedelta(hours=24, minutes=1)),
            "scheduled_for datetime can only be 24 hours in the future",
        ),
        # Beyond what a datetime holds: refused by the same rule, never an INTERNAL.
        (lambda: _far(2**62), "scheduled_for datetime can only be 24 hours in the future"),
        (lambda: _far(-(2**62)), "scheduled_for datetime can not be in the past"),
    ],
)
def test_a_time_outside_the_next_24_hours_is_refused_and_nothing_is_queued(
    ingest_stub: IngestStub, demo: DemoSetup, settings: Settings, when: Any, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        ingest_stub.SendSms(_sms(demo, when()), metadata=bearer(demo.live_key))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == [("scheduled_for", message)]
    assert take_queued(settings.broker_url, "db-sms") == []


def test_in_a_batch_a_bad_time_fails_its_own_item_only(
    ingest_stub: IngestStub, demo: DemoSetup, settings: Settings
) -> None:
    good = _at(datetime.now(UTC) + timedelta(hours=1))
    bad = _at(datetime.now(UTC) - timedelta(hours=1))
    request = ingest_pb2.SendSmsBatchRequest(items=[_sms(demo, good), _sms(demo, bad)])
    answer = ingest_stub.SendSmsBatch(request, metadata=bearer(demo.live_key))
    assert answer.results[0].HasField("accepted")
    assert (answer.results[1].error.field, answer.results[1].error.message) == (
        "scheduled_for",
        "scheduled_for datetime can not be in the past",
    )
    assert len(take_queued(settings.broker_url, "db-sms")) == 1


# --- The whole path: the db dispatcher stores the row with next_attempt_at at the time asked for and holds it
# back from send-*; the sweep hands it off once due.


@pytest.fixture
def stack(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[Stack]:
    with running_stack(settings, clean_db) as running:  # no scheduler: the test sweeps with its own "now"
        yield running


def test_a_scheduled_message_is_stored_now_and_handed_off_when_due_not_before(
    stack: Stack, admin: Admin, clean_db: Engine
) -> None:
    demo = admin.demo("scheduled path")
    client = IngestClient(stack.settings.ingest_address, demo.live_key)
    publisher = ConfirmingPublisher(stack.settings.broker_url)
    republish = Republisher(publisher, stack.settings.email_domain)
    # A few seconds ahead: a hand-off claims a row only once its time has really come.
    when = datetime.now(UTC) + timedelta(seconds=4)
    try:
        with grpc.insecure_channel(stack.settings.ingest_address) as channel:
            answer = ingest_pb2_grpc.IngestStub(channel).SendSms(
                _sms(demo, _at(when)), metadata=bearer(demo.live_key), timeout=10
            )
        stored = wait_for(lambda: _row(clean_db, answer.id))
        assert (stored.status, stored.next_attempt_at) == ("created", when)
        tasks.redrive_due_notifications(clean_db, when - timedelta(seconds=1), republish=republish)
        # Nothing went to a provider: not when stored, nor on a sweep before its time.
        assert stack.stats()["total"] == 0
        assert _row(clean_db, answer.id).status == "created"
        time.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.1)
        tasks.redrive_due_notifications(clean_db, datetime.now(UTC), republish=republish)
        assert final_status(client, answer.id) == "delivered"
        assert stack.stats()["sends"] == {answer.id: 1}
    finally:
        publisher.close()
        client.close()


def _row(engine: Engine, notification_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status, next_attempt_at FROM notifications WHERE id = :id"), {"id": notification_id}
        ).one_or_none()
