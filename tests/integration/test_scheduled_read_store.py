"""The time a send asked for, as the db dispatcher stores it (real PostgreSQL and RabbitMQ): kept on the row
whether the message was held back or its time had already passed on arrival, NULL for an unscheduled
one, and still there in notification_history once retention has moved the row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from herald.db import notifications as notifications_db
from herald.domain import limits
from herald.queues import ConfirmingPublisher
from herald.scheduling import tasks
from herald.service_layer.admin import DemoSetup
from tests.integration import test_scheduled_store as scheduled_store
from tests.integration.test_scheduled_store import _message, _persist

# That module's fixtures, shared rather than built again.
demo = scheduled_store.demo
publisher = scheduled_store.publisher


def _stored(engine: Engine, notification_id: str) -> tuple[datetime | None, datetime | None]:
    """(scheduled_for, next_attempt_at) as the repository reads the row."""
    with engine.connect() as conn:
        row = notifications_db.get(conn, notification_id)
    assert row is not None
    return row.scheduled_for, row.next_attempt_at


def test_the_row_keeps_the_time_asked_for_held_back_or_not(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup
) -> None:
    later_time = datetime.now(UTC) + timedelta(hours=2)
    # Asked for a time that passed while the message waited on db-*: handed on at once, time still kept.
    passed_time = datetime.now(UTC) - timedelta(seconds=5)
    later, passed, unscheduled = _message(demo, later_time), _message(demo, passed_time), _message(demo, None)
    _persist(clean_db, publisher, later, passed, unscheduled)

    assert _stored(clean_db, later.id) == (later_time, later_time)
    assert _stored(clean_db, passed.id) == (passed_time, None)
    assert _stored(clean_db, unscheduled.id) == (None, None)


def test_retention_moves_the_time_into_history(
    clean_db: Engine, publisher: ConfirmingPublisher, demo: DemoSetup
) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    scheduled, unscheduled = _message(demo, when), _message(demo, None)
    _persist(clean_db, publisher, scheduled, unscheduled)

    tasks.delete_notifications_older_than_retention(
        clean_db, datetime.now(UTC) + timedelta(days=30), retention_days=limits.DEFAULT_RETENTION_DAYS
    )
    with clean_db.connect() as conn:
        live = conn.scalar(text("SELECT count(*) FROM notifications"))
        rows = conn.execute(text("SELECT id::text, scheduled_for FROM notification_history"))
        history = {notification_id: scheduled_for for notification_id, scheduled_for in rows}
    assert (live, history) == (0, {scheduled.id: when, unscheduled.id: None})
