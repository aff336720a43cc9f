"""SQL for received text messages: which service owns a number, storing a batch, a page, and retention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, column, select, table, text, tuple_
from sqlalchemy.dialects.postgresql import insert

from herald import metrics
from herald.db.models import InboundSms

# inbound_numbers belongs to sender management (migration 0007); only these two columns are read here.
_inbound_numbers = table("inbound_numbers", column("number"), column("service_id"))


@dataclass(frozen=True, slots=True)
class ReceivedTextRow:
    id: str
    created_at: datetime
    service_id: str
    notify_number: str
    user_number: str
    content: str


def services_for_numbers(conn: Connection, numbers: Sequence[str]) -> dict[str, str]:
    """number -> the id of the service it belongs to, for those of `numbers` that belong to one."""
    if not numbers:
        return {}
    rows = conn.execute(
        select(_inbound_numbers.c.number, _inbound_numbers.c.service_id).where(
            _inbound_numbers.c.number.in_(sorted(set(numbers)))
        )
    )
    return {row.number: str(row.service_id) for row in rows}


@metrics.instrumented
def insert_texts(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """One statement for a batch; a text stored before (its batch handled again) is skipped by its id.
    Returns how many were new."""
    if not rows:
        return 0
    result = conn.execute(insert(InboundSms).values(list(rows)).on_conflict_do_nothing(index_elements=["id"]))
    return int(result.rowcount)


_PAGE_COLUMNS = (
    InboundSms.id,
    InboundSms.created_at,
    InboundSms.service_id,
    InboundSms.notify_number,
    InboundSms.user_number,
    InboundSms.content,
)


def page(conn: Connection, service_id: str, older_than: str, limit: int) -> list[ReceivedTextRow]:
    """Newest first; the cursor is the keyset (created_at, id) of `older_than`, never an OFFSET (served by
    ix_inbound_sms_service_created). An `older_than` the service does not have gives an empty page (Notify)."""
    query = select(*_PAGE_COLUMNS).where(InboundSms.service_id == service_id)
    if older_than:
        cursor = conn.execute(
            select(InboundSms.created_at, InboundSms.id).where(
                InboundSms.id == older_than, InboundSms.service_id == service_id
            )
        ).one_or_none()
        if cursor is None:
            return []
        query = query.where(tuple_(InboundSms.created_at, InboundSms.id) < tuple_(cursor[0], cursor[1]))
    rows = conn.execute(query.order_by(InboundSms.created_at.desc(), InboundSms.id.desc()).limit(limit))
    return [
        ReceivedTextRow(str(r.id), r.created_at, str(r.service_id), r.notify_number, r.user_number, r.content)
        for r in rows
    ]


# Notify's delete-inbound-sms: the service's SMS retention or the default, cut at London midnight as the
# notifications' retention is (herald/db/notifications.py). `:earliest` lets ix_inbound_sms_created_at bound
# the scan.
_DELETE_EXPIRED = text(
    """
    WITH expired AS (
        DELETE FROM inbound_sms WHERE id IN (
            SELECT i.id FROM inbound_sms AS i
            LEFT JOIN service_data_retention AS r
                ON r.service_id = i.service_id AND r.notification_type = 'sms'
            WHERE i.created_at < :earliest
              AND i.created_at < (date_trunc('day', CAST(:now AS timestamptz) AT TIME ZONE 'Europe/London')
                                  - make_interval(days => COALESCE(r.days_of_retention, :default_days)))
                                 AT TIME ZONE 'Europe/London'
            ORDER BY i.created_at LIMIT :batch FOR UPDATE OF i SKIP LOCKED)
        RETURNING 1
    )
    SELECT count(*) FROM expired
    """
)


@metrics.instrumented
def delete_expired(conn: Connection, now: datetime, earliest: datetime, default_days: int, batch: int) -> int:
    """Deletes up to `batch` received texts past their service's SMS retention; call it until it returns 0.
    `earliest`: the cutoff of the shortest retention allowed (domain.limits.retention_cutoff)."""
    result = conn.execute(
        _DELETE_EXPIRED, {"now": now, "earliest": earliest, "default_days": default_days, "batch": batch}
    )
    return int(result.scalar_one())
