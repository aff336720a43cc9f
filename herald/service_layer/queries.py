"""Reads for callers: a service sees only its own notifications."""

from __future__ import annotations

from sqlalchemy import Engine

from herald.db import notifications as notifications_db
from herald.domain import inputs
from herald.service_layer.auth import Caller
from herald.service_layer.errors import InvalidRequest, NotFound


def get_notification(engine: Engine, caller: Caller, notification_id: str) -> notifications_db.NotificationRow:
    try:
        notification_id = inputs.canonical_uuid(notification_id, "notification_id")
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None
    with engine.connect() as conn:
        row = notifications_db.get(conn, notification_id, service_id=caller.service.id)
    if row is None:
        raise NotFound()
    return row
