"""A message scheduled for later waits on its row, not on a queue: the db dispatcher stores it with its due
time and holds it back from send-*, and the scheduler's sweep hands it on once due (real PostgreSQL and
RabbitMQ; the sweep is driven with a given "now")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from herald.db import notifications as notifications_db
from herald.queues import ConfirmingPublisher, Delivery
from herald.queues.codec import pack
from herald.queues.topology import SEND_QUEUE, queue
from herald.scheduling import tasks
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.delivery import Persister, Republisher
from herald.settings import Settings
from herald.v1.notifications_pb2 import KeyType, NotificationType
from herald.v1.queue_pb2 import NotificationBatch, NotificationMessage
from tests.support import queue_depth


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("scheduled")


@pytest.fixture
def publisher(settings: Settings, clean_broker: str) -> Iterator[ConfirmingPublisher]:
    confirming = ConfirmingPublisher(settings.broker_url)
    yield confirming
    confirming.close()


def _message(demo: DemoSetup, due: datetime | None) -> NotificationMessage:
    message = NotificationMessage(
        id=str(uuid.uuid4()),
        service_id=demo.service_id,
        template_id=demo.sms_template_id,
        template_version=1,
        type=NotificationType.SMS,
        to="447700900123",
        body="Hi",
        key_type=KeyType.NORMAL,
        sender="Herald",
    )
    message.created_at.GetCurrentTime()
    if due is not None:
        message.scheduled_for.FromDatetime(due)
    return message


class _Settled:
    """The broker message a Delivery wraps: the Persister acks it once the batch is stored and passed on."""

    acknowledged = False

    def ack(self) -> None:
        self.acknowledged = True


def _persist(engine: Engine, publisher: ConfirmingPublisher, *messages: NotificationMessage) -> None:
    body = pack([m.SerializeToString() for m in messages])
    settled = _Settled()
    Persister(engine, publisher)([Delivery("db-sms", body, False, settled, {})])
    assert settled.acknowledged


def _sent_ids(broker_url: str, expected_messages: int) -> set[str]:
    ids: set[str] = set()
    with Connection(broker_url) as conn:
        sent = queue(SEND_QUEUE[NotificationType.SMS])(conn.default_channel)
        for _ in range(expected_messages):
            batch = NotificationBatch()
            batch.ParseFromString(sent.get(no_ack=True).body)
            ids.update(m.id for m in batch.notifications)
    return ids


def _next_attempt_at(engine: Engine, notification_id: str) -> datetime | None:
    with engine.connect() as conn:
        due: datetime | None = conn.execute(
            text("SELECT next_attempt_at FROM notifications WHERE id = :id"), {"id": notification_id}
        ).scalar_one()
    return due


def test_a_message_due_later_is_stored_and_held_back_until_the_sweep_finds_it_due(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup, settings: Settings
) -> None:
    due = datetime.now(UTC) + timedelta(hours=2)
    later, now = _message(demo, due), _message(demo, None)
    _persist(clean_db, publisher, later, now)

    assert _next_attempt_at(clean_db, later.id) == due
    assert _next_attempt_at(clean_db, now.id) is None
    assert queue_depth(settings.broker_url, SEND_QUEUE[NotificationType.SMS]) == 1  # only the one due now

    republish = Republisher(publisher, settings.email_domain)
    tasks.redrive_due_notifications(clean_db, due - timedelta(minutes=1), republish=republish)
    assert queue_depth(settings.broker_url, SEND_QUEUE[NotificationType.SMS]) == 1  # not before its time

    tasks.redrive_due_notifications(clean_db, due + timedelta(seconds=1), republish=republish)
    assert queue_depth(settings.broker_url, SEND_QUEUE[NotificationType.SMS]) == 2
    assert _sent_ids(settings.broker_url, 2) == {later.id, now.id}


def test_a_message_whose_time_has_passed_goes_straight_on(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup, settings: Settings
) -> None:
    past = _message(demo, datetime.now(UTC) - timedelta(seconds=5))
    _persist(clean_db, publisher, past)
    assert _next_attempt_at(clean_db, past.id) is None
    assert queue_depth(settings.broker_url, SEND_QUEUE[NotificationType.SMS]) == 1


def test_a_scheduled_message_is_waiting_not_stuck(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup
) -> None:
    due = datetime.now(UTC) + timedelta(hours=20)
    _persist(clean_db, publisher, _message(demo, due))
    now = datetime.now(UTC) + timedelta(hours=1)
    with clean_db.connect() as conn:
        assert notifications_db.stuck_counts(conn, now - timedelta(minutes=30), now) == {}
        assert notifications_db.stuck_counts(conn, due + timedelta(hours=1), due + timedelta(hours=2)) == {"created": 1}


def test_a_job_row_waiting_its_turn_is_not_stuck(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup
) -> None:
    """It waits in the bulk lanes for as long as its job takes; check-job-status watches the job."""
    row = _message(demo, None)
    row.job_id, row.job_row_number = str(uuid.uuid4()), 2
    _persist(clean_db, publisher, row)
    later = datetime.now(UTC) + timedelta(hours=1)
    with clean_db.connect() as conn:
        assert notifications_db.stuck_counts(conn, later, later) == {}
