"""A copy of a notification whose row is already stored (redelivered after a crash, or the same
idempotency key sent again with another body) is never forwarded as it came: the stored row is what is
sent, through the sweep, so the recipient, GetNotification, callbacks and billing always agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from herald.queues import ConfirmingPublisher
from herald.queues.topology import SEND_QUEUE
from herald.scheduling import tasks
from herald.service_layer.admin import DemoSetup
from herald.service_layer.delivery import Republisher
from herald.settings import Settings
from herald.v1.notifications_pb2 import NotificationType
from tests.integration.test_scheduled_store import _message, _next_attempt_at, _persist, _sent_ids, demo, publisher
from tests.support import queue_depth

__all__ = ["demo", "publisher"]  # the fixtures, shared with test_scheduled_store

SEND_SMS = SEND_QUEUE[NotificationType.SMS]


def _stored_to(engine: Engine, notification_id: str) -> str:
    with engine.connect() as conn:
        to: str = conn.execute(
            text('SELECT "to" FROM notifications WHERE id = :id'), {"id": notification_id}
        ).scalar_one()
    return to


def test_a_second_copy_with_another_recipient_is_not_sent_the_stored_row_is(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup, settings: Settings
) -> None:
    first = _message(demo, None)
    again = _message(demo, None)
    again.id, again.to, again.body = first.id, "447700900999", "Another body"
    _persist(clean_db, publisher, first)
    assert _sent_ids(settings.broker_url, 1) == {first.id}  # the first copy went on, as stored

    _persist(clean_db, publisher, again)
    assert queue_depth(settings.broker_url, SEND_SMS) == 0  # the second copy was not forwarded
    assert _stored_to(clean_db, first.id) == "447700900123"
    assert _next_attempt_at(clean_db, first.id) is not None  # not attempted yet: the sweep sends the row

    now = datetime.now(UTC) + timedelta(seconds=1)
    tasks.redrive_due_notifications(clean_db, now, republish=Republisher(publisher, settings.email_domain))
    assert _sent_ids(settings.broker_url, 1) == {first.id}
    # What the sweep published is the stored row, not the second copy.
    with clean_db.connect() as conn:
        body = conn.execute(text("SELECT body FROM notifications WHERE id = :id"), {"id": first.id}).scalar_one()
    assert body == "Hi"


def test_two_copies_in_one_batch_forward_the_one_stored(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup, settings: Settings
) -> None:
    first = _message(demo, None)
    again = _message(demo, None)
    again.id, again.to = first.id, "447700900999"
    _persist(clean_db, publisher, first, again)
    assert queue_depth(settings.broker_url, SEND_SMS) == 1
    assert _stored_to(clean_db, first.id) == "447700900123"


def test_a_copy_redelivered_after_a_crash_before_the_forward_is_sent_by_the_sweep(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup, settings: Settings
) -> None:
    """The batch was stored, then the dispatcher died before forwarding it: the redelivered copy finds
    its row, which the sweep sends within seconds rather than at the hour-long never-attempted replay."""
    message = _message(demo, None)
    _persist(clean_db, publisher, message)
    _sent_ids(settings.broker_url, 1)  # the forward that the crash lost
    _persist(clean_db, publisher, message)
    assert queue_depth(settings.broker_url, SEND_SMS) == 0
    tasks.redrive_due_notifications(
        clean_db, datetime.now(UTC) + timedelta(seconds=1), republish=Republisher(publisher, settings.email_domain)
    )
    assert _sent_ids(settings.broker_url, 1) == {message.id}
