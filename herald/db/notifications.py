"""SQL for notifications: batch insert, guarded status moves, reads and the retention move."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from herald.db.models import Notification, NotificationHistory, Service
from herald.domain import statuses as st

_table = cast(Table, Notification.__table__)
_HISTORY_COLUMNS = [c.name for c in NotificationHistory.__table__.columns]


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: str
    service_id: str
    template_id: str
    template_version: int
    key_type: str
    notification_type: str
    to: str
    body: str
    subject: str | None
    reference: str | None
    status: str
    billable_units: int
    created_at: datetime
    sent_at: datetime | None
    updated_at: datetime | None


_ROW_COLUMNS = [
    Notification.id,
    Notification.service_id,
    Notification.template_id,
    Notification.template_version,
    Notification.key_type,
    Notification.notification_type,
    Notification.to,
    Notification.body,
    Notification.subject,
    Notification.reference,
    Notification.status,
    Notification.billable_units,
    Notification.created_at,
    Notification.sent_at,
    Notification.updated_at,
]


def _row(r: Any) -> NotificationRow:
    return NotificationRow(str(r[0]), str(r[1]), str(r[2]), *r[3:])


# Hot-path statements are built once (building SQLAlchemy expressions per call costs more CPU than the
# round trip). Executed with a list of rows, _INSERT becomes one multi-row INSERT per 1,000 rows
# (SQLAlchemy's insertmanyvalues), compiled once.
_INSERT = pg_insert(_table).on_conflict_do_nothing(index_elements=["id"]).returning(Notification.id)
_BY_ID = select(*_ROW_COLUMNS).where(Notification.id == bindparam("notification_id"))
_BY_ID_LOCKED = _BY_ID.with_for_update()
_BY_ID_FOR_SERVICE = _BY_ID.where(Notification.service_id == bindparam("service_id"))
_CLAIM = (
    update(_table)
    .where(Notification.id == bindparam("notification_id"), Notification.status == st.CREATED)
    .values(status=st.SENDING, updated_at=bindparam("now"))
)
_HANDOFF = (
    update(_table)
    .where(Notification.id == bindparam("notification_id"))
    .values(sent_by=bindparam("provider"), sent_at=bindparam("now"), updated_at=bindparam("now"))
)
_MOVE = (
    update(_table)
    .where(
        Notification.id == bindparam("notification_id"),
        Notification.status.in_(bindparam("sources", expanding=True)),
    )
    .values(status=bindparam("new_status"), updated_at=bindparam("now"))
    .returning(Notification.status)
)
_MOVE_HANDED = _MOVE.values(sent_by=bindparam("provider"), sent_at=bindparam("now"))
_STATUS_LOCKED = select(Notification.status).where(Notification.id == bindparam("notification_id")).with_for_update()


def insert_batch(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """One INSERT per batch; ids already stored (a redelivered message) are skipped. Returns how many
    rows were new."""
    if not rows:
        return 0
    return len(conn.execute(_INSERT, list(rows)).all())


def get(
    conn: Connection, notification_id: str, service_id: str | None = None, *, lock: bool = False
) -> NotificationRow | None:
    if service_id is not None:
        query, params = _BY_ID_FOR_SERVICE, {"notification_id": notification_id, "service_id": service_id}
    else:
        query, params = (_BY_ID_LOCKED if lock else _BY_ID), {"notification_id": notification_id}
    row = conn.execute(query, params).one_or_none()
    return _row(row) if row is not None else None


def claim_for_sending(conn: Connection, notification_id: str, now: datetime) -> bool:
    """created -> sending, only once: a redelivered message finds nothing to claim."""
    return bool(conn.execute(_CLAIM, {"notification_id": notification_id, "now": now}).rowcount)


def record_handoff(conn: Connection, notification_id: str, provider: str, now: datetime) -> None:
    conn.execute(_HANDOFF, {"notification_id": notification_id, "provider": provider, "now": now})


def move_status(
    conn: Connection, notification_id: str, new_status: str, now: datetime, handed_to: str | None = None
) -> str | None:
    """Moves forward only, guarded by the transition table. Returns the new status, or None if refused.
    `handed_to` also records the hand-off (a simulated provider answers and delivers in one step)."""
    params = {
        "notification_id": notification_id,
        "sources": list(st.sources_for(new_status)),
        "new_status": new_status,
        "now": now,
        "provider": handed_to,
    }
    result = conn.execute(_MOVE_HANDED if handed_to else _MOVE, params).one_or_none()
    return None if result is None else str(result[0])


def current_status(conn: Connection, notification_id: str) -> str | None:
    """Locks the row until the transaction ends, so concurrent receipts are mapped one after another."""
    return conn.scalar(_STATUS_LOCKED, {"notification_id": notification_id})


def move_to_history(conn: Connection, before: datetime, batch_size: int) -> int:
    """Moves up to batch_size rows created before `before` into history in one statement, leaving the
    personal data (recipient, personalisation, body) behind. Test-key rows get no history (as in Notify)."""
    columns = ", ".join(_HISTORY_COLUMNS)
    moved = conn.execute(
        text(
            f"""
            WITH expired AS (
                DELETE FROM notifications WHERE id IN (
                    SELECT id FROM notifications WHERE created_at < :before
                    ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
                RETURNING {columns}
            ), copied AS (
                INSERT INTO notification_history ({columns})
                SELECT {columns} FROM expired WHERE key_type <> 'test'
                ON CONFLICT (id) DO NOTHING
            )
            SELECT count(*) FROM expired
            """
        ),
        {"before": before, "batch": batch_size},
    )
    return int(moved.scalar_one())


def ids_in_status_between(
    conn: Connection, statuses: Iterable[str], after: datetime, before: datetime, limit: int
) -> list[str]:
    """Ids in `statuses` created after `after` and before `before`, oldest first."""
    rows = conn.execute(
        select(Notification.id)
        .where(
            Notification.status.in_(list(statuses)),
            Notification.created_at > after,
            Notification.created_at < before,
        )
        .order_by(Notification.created_at)
        .limit(limit)
    ).all()
    return [str(r[0]) for r in rows]


def move_status_created_before(
    conn: Connection, statuses: Iterable[str], new_status: str, before: datetime, now: datetime, limit: int
) -> int:
    """move_status for up to `limit` rows at once: those in `statuses` created before `before`, oldest
    first. The transition table guards it the same way, so a row moved on meanwhile is left alone."""
    allowed = sorted(set(statuses) & set(st.sources_for(new_status)))
    batch = (
        select(Notification.id)
        .where(Notification.status.in_(allowed), Notification.created_at < before)
        .order_by(Notification.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = conn.execute(
        update(_table)
        .where(Notification.id.in_(batch), Notification.status.in_(allowed))
        .values(status=new_status, updated_at=now)
    )
    return int(result.rowcount)


def for_replay(conn: Connection, ids: Sequence[str]) -> list[Any]:
    """What a send-* message needs, for rows still `created`: the row and its service's settings."""
    return list(
        conn.execute(
            select(
                Notification.id,
                Notification.service_id,
                Notification.template_id,
                Notification.template_version,
                Notification.notification_type,
                Notification.to,
                Notification.body,
                Notification.subject,
                Notification.reference,
                Notification.key_type,
                Notification.api_key_id,
                Notification.billable_units,
                Notification.created_at,
                Service.research_mode,
                Service.sms_sender,
                Service.email_from,
            )
            .join(Service, Service.id == Notification.service_id)
            .where(Notification.id.in_(list(ids)), Notification.status == st.CREATED)
        ).all()
    )
