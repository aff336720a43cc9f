"""SQL for notifications: batch insert, guarded status moves, reads and the retention move."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from herald import metrics
from herald.db.models import Notification, NotificationHistory, PendingReceipt
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
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    rate_multiplier: float
    unsubscribe_url: str | None
    scheduled_for: datetime | None


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
    Notification.attempts,
    Notification.next_attempt_at,
    Notification.last_error,
    Notification.rate_multiplier,
    Notification.unsubscribe_url,
    Notification.scheduled_for,
]


def _row(r: Any) -> NotificationRow:
    return NotificationRow(str(r[0]), str(r[1]), str(r[2]), *r[3:])


# Hot-path statements are built once (building SQLAlchemy expressions per call costs more CPU than the
# round trip). Executed with a list of rows, _INSERT becomes one multi-row INSERT per 1,000 rows
# (SQLAlchemy's insertmanyvalues), compiled once.
_INSERT = pg_insert(_table).on_conflict_do_nothing(index_elements=["id"]).returning(Notification.id)
_BY_ID = select(*_ROW_COLUMNS).where(Notification.id == bindparam("notification_id"))
_BY_ID_FOR_SERVICE = _BY_ID.where(Notification.service_id == bindparam("service_id"))


@metrics.instrumented
def insert_batch(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """One INSERT per batch; ids already stored (a redelivered message, an idempotency key sent again)
    are skipped, and so is an id's second row in the batch. Returns the ids stored now."""
    if not rows:
        return set()
    return {str(r[0]) for r in conn.execute(_INSERT, list(rows))}


_DUE_NOW = text(
    """UPDATE notifications SET next_attempt_at = :now
       WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'created' AND next_attempt_at IS NULL"""
)


@metrics.instrumented
def due_now(conn: Connection, ids: Sequence[str], now: datetime) -> None:
    """Rows stored earlier and not yet attempted are handed to the sweep, which publishes them again as
    stored: a copy that found its row already there is never sent itself (its content may differ)."""
    conn.execute(_DUE_NOW, {"ids": list(ids), "now": now})


_REQUEST_HASHES = text("SELECT id, request_hash FROM notifications WHERE id = ANY(CAST(:ids AS uuid[]))")


@metrics.instrumented
def request_hashes(conn: Connection, ids: Sequence[str]) -> dict[str, str | None]:
    """Each of these ids that has a row: its request's hash, None if it was stored without one (no
    idempotency key, or before 0012). Not notification_history: the hash is personal data, retention
    forgets it, and a key holds as long as its notification is retained."""
    return {str(r[0]): r[1] for r in conn.execute(_REQUEST_HASHES, {"ids": list(ids)})}


@metrics.instrumented
def get(conn: Connection, notification_id: str, service_id: str | None = None) -> NotificationRow | None:
    if service_id is not None:
        query, params = _BY_ID_FOR_SERVICE, {"notification_id": notification_id, "service_id": service_id}
    else:
        query, params = _BY_ID, {"notification_id": notification_id}
    row = conn.execute(query, params).one_or_none()
    return _row(row) if row is not None else None


_HISTORY_COLUMN_LIST = ", ".join(f'"{c.name}"' for c in NotificationHistory.__table__.columns)
# Notify's cutoff: London midnight of (London's today - days), for each service and type's own days or the
# default. `:earliest` (the cutoff of the shortest retention) lets the index on created_at bound the scan.
_MOVE_EXPIRED = text(
    f"""
    WITH expired AS (
        DELETE FROM notifications WHERE id IN (
            SELECT n.id FROM notifications AS n
            LEFT JOIN service_data_retention AS r
                ON r.service_id = n.service_id AND r.notification_type = n.notification_type
            WHERE n.created_at < :earliest
              AND n.created_at < (date_trunc('day', CAST(:now AS timestamptz) AT TIME ZONE 'Europe/London')
                                  - make_interval(days => COALESCE(r.days_of_retention, :default_days)))
                                 AT TIME ZONE 'Europe/London'
            ORDER BY n.created_at LIMIT :batch FOR UPDATE OF n SKIP LOCKED)
        RETURNING {_HISTORY_COLUMN_LIST}
    ), copied AS (
        INSERT INTO notification_history ({_HISTORY_COLUMN_LIST})
        SELECT {_HISTORY_COLUMN_LIST} FROM expired WHERE key_type <> 'test'
        ON CONFLICT (id) DO NOTHING
    )
    SELECT count(*) FROM expired
    """
)


@metrics.instrumented
def move_expired_to_history(conn: Connection, now: datetime, earliest: datetime, default_days: int, batch: int) -> int:
    """Moves up to `batch` notifications past their service's retention into notification_history, without
    the personal data; test-key rows are deleted without history (Notify). `earliest`: the cutoff of the
    shortest retention allowed (domain.limits.retention_cutoff(now, MIN_RETENTION_DAYS)). Returns how many
    rows left `notifications`; call it until it returns 0."""
    result = conn.execute(
        _MOVE_EXPIRED, {"now": now, "earliest": earliest, "default_days": default_days, "batch": batch}
    )
    return int(result.scalar_one())


@metrics.instrumented
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


# --- Hand-offs: batch claims and outcomes. Each statement takes whole batches as arrays (unnest), so a
# batch costs one round trip per kind of outcome, not one per notification. Ids, attempts and provider
# names (none holds a comma) travel as one comma-joined string each, split by PostgreSQL: psycopg2 quotes
# a list's items one by one, about 80 µs per 1,000 items and array, which a batch of 1,000 hand-offs
# paid five times. Claims return ids as text: the driver would build a uuid.UUID for each, only for it
# to be turned back into a string.

_CLAIM_GUARD = """
    FROM unnest(CAST(string_to_array(:ids, ',') AS uuid[]), CAST(string_to_array(:attempts, ',') AS int[]),
                string_to_array(:providers, ',')) AS v(id, attempt, provider)
    WHERE n.id = v.id AND n.attempts = v.attempt AND n.status = 'created'
      AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= :now)
    RETURNING CAST(n.id AS text), v.attempt
"""
_CLAIM = text(
    """UPDATE notifications AS n SET attempts = n.attempts + 1, next_attempt_at = :lease_until, last_error = NULL,
       last_provider = v.provider, sticky_provider = true"""
    + _CLAIM_GUARD
)
_CLAIM_SIMULATED = text(
    """UPDATE notifications AS n SET attempts = n.attempts + 1, status = 'sending', sent_at = :now,
       updated_at = :now, next_attempt_at = NULL, last_error = NULL,
       sent_by = CASE n.notification_type WHEN 'sms' THEN :sms_provider ELSE :email_provider END"""
    + _CLAIM_GUARD
)
_HANDED_OFF = text(
    """UPDATE notifications AS n
       SET status = CASE WHEN n.status = 'created' THEN 'sending' ELSE n.status END,
           sent_by = v.provider, sent_at = COALESCE(n.sent_at, :now), updated_at = :now,
           next_attempt_at = NULL, last_error = NULL
       FROM unnest(CAST(string_to_array(:ids, ',') AS uuid[]), string_to_array(:providers, ','))
            AS v(id, provider)
       WHERE n.id = v.id"""
)
_RETRY_LATER = text(
    """UPDATE notifications AS n
       SET next_attempt_at = v.due, last_error = v.error, sticky_provider = v.sticky, updated_at = :now
       FROM unnest(CAST(:ids AS uuid[]), CAST(:errors AS text[]), CAST(:stickies AS boolean[]),
                   CAST(:dues AS timestamptz[])) AS v(id, error, sticky, due)
       WHERE n.id = v.id AND n.status = 'created'"""
)
_FAILED = text(
    f"""UPDATE notifications AS n
       SET status = '{st.TECHNICAL_FAILURE}', last_error = v.error, next_attempt_at = NULL, updated_at = :now
       FROM unnest(CAST(:ids AS uuid[]), CAST(:errors AS text[])) AS v(id, error)
       WHERE n.id = v.id AND n.status = 'created'"""
)


@metrics.instrumented
def claim(
    conn: Connection, claims: Sequence[tuple[str, int, str]], now: datetime, lease_until: datetime
) -> set[tuple[str, int]]:
    """Takes the rows whose hand-off the (id, attempt, provider) messages may make: still `created`, still
    at that many attempts, not leased or waiting for a retry; returns the (id, attempt) pairs taken. A
    stale message claims nothing; callers pass each (id, attempt) once. The provider is recorded first,
    so a re-drive after a lost answer goes back to it."""
    if not claims:
        return set()
    params = {
        "ids": ",".join([c[0] for c in claims]),
        "attempts": ",".join([str(c[1]) for c in claims]),
        "providers": ",".join([c[2] for c in claims]),
        "now": now,
        "lease_until": lease_until,
    }
    return {(r[0], r[1]) for r in conn.execute(_CLAIM, params)}


@metrics.instrumented
def claim_simulated(
    conn: Connection, claims: Sequence[tuple[str, int]], now: datetime, sms_provider: str, email_provider: str
) -> set[tuple[str, int]]:
    """Research mode and test keys: the claim and the (simulated) hand-off in one statement."""
    if not claims:
        return set()
    params = {
        "ids": ",".join([c[0] for c in claims]),
        "attempts": ",".join([str(c[1]) for c in claims]),
        "providers": "," * (len(claims) - 1),  # one empty name each
        "now": now,
        "sms_provider": sms_provider,
        "email_provider": email_provider,
    }
    return {(r[0], r[1]) for r in conn.execute(_CLAIM_SIMULATED, params)}


@metrics.instrumented
def record_handoffs(conn: Connection, handed: Sequence[tuple[str, str]], now: datetime) -> None:
    """(id, provider): the provider has it. A receipt that came first keeps its status."""
    if handed:
        ids, providers = ",".join([h[0] for h in handed]), ",".join([h[1] for h in handed])
        conn.execute(_HANDED_OFF, {"ids": ids, "providers": providers, "now": now})


@metrics.instrumented
def schedule_retries(conn: Connection, retries: Sequence[tuple[str, str, bool, datetime]], now: datetime) -> None:
    """(id, error, sticky, due): the row waits, visible, until `due`; the scheduler's sweep re-publishes it.
    `sticky`: the provider's answer was lost, so the retry must go to the same provider."""
    if retries:
        conn.execute(
            _RETRY_LATER,
            {
                "ids": [r[0] for r in retries],
                "errors": [r[1] for r in retries],
                "stickies": [r[2] for r in retries],
                "dues": [r[3] for r in retries],
                "now": now,
            },
        )


@metrics.instrumented
def record_failures(conn: Connection, failures: Sequence[tuple[str, str]], now: datetime) -> None:
    """(id, error): no retry left, or one that cannot help: technical-failure."""
    if failures:
        conn.execute(_FAILED, {"ids": [f[0] for f in failures], "errors": [f[1] for f in failures], "now": now})


# --- Receipts: read the batch's rows under lock in one statement, decide in Python (the mapping
# depends on the current status), write the moves in one statement.

# The id comes back as text rather than as a uuid.UUID turned back into a str, a row at a time; the
# rows are still locked in uuid order (ORDER BY the column, not the text).
_STATUSES_LOCKED = text(
    "SELECT CAST(id AS text) AS ref, status FROM notifications WHERE id = ANY(CAST(:ids AS uuid[])) "
    "ORDER BY id FOR UPDATE"
)
_APPLY_MOVES = text(
    """UPDATE notifications AS n
       SET status = v.status, updated_at = :now, next_attempt_at = NULL,
           sent_by = COALESCE(n.sent_by, v.provider), sent_at = COALESCE(n.sent_at, :now)
       FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:providers AS text[]))
            AS v(id, status, provider)
       WHERE n.id = v.id"""
)


@metrics.instrumented
def statuses_for_update(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """Current statuses, the rows locked until the transaction ends (in id order, so two appliers
    locking overlapping batches cannot deadlock)."""
    if not ids:
        return {}
    return {ref: status for ref, status in conn.execute(_STATUSES_LOCKED, {"ids": list(ids)})}


@metrics.instrumented
def apply_moves(conn: Connection, moves: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """(id, new status, provider), already checked against the transition table under the row lock."""
    if moves:
        conn.execute(
            _APPLY_MOVES,
            {
                "ids": [m[0] for m in moves],
                "statuses": [m[1] for m in moves],
                "providers": [m[2] for m in moves],
                "now": now,
            },
        )


@metrics.instrumented
def insert_pending_receipts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of receipts_pending: notification_id, provider, status, code, received_at."""
    if rows:
        conn.execute(insert(PendingReceipt), list(rows))


_TAKE_READY_RECEIPTS = text(
    """DELETE FROM receipts_pending AS p
       WHERE p.id IN (SELECT p2.id FROM receipts_pending p2 JOIN notifications n ON n.id = p2.notification_id
                      ORDER BY p2.id LIMIT :limit FOR UPDATE OF p2 SKIP LOCKED)
       RETURNING p.notification_id, p.provider, p.status, p.code, p.received_at, p.id"""
)


@metrics.instrumented
def take_ready_pending_receipts(conn: Connection, limit: int) -> list[Any]:
    """Removes and returns (oldest first) early receipts whose notification is stored now."""
    rows = conn.execute(_TAKE_READY_RECEIPTS, {"limit": limit}).all()
    return sorted(rows, key=lambda r: r[5])


@metrics.instrumented
def delete_pending_receipts_before(conn: Connection, before: datetime) -> int:
    """Early receipts whose notification never came (a bogus or foreign reference): kept until `before`."""
    result = conn.execute(delete(PendingReceipt).where(PendingReceipt.received_at < before))
    return int(result.rowcount)


# --- The sweep: rows that may be attempted (again) and are not already waiting in a queue.

_DUE_COLUMNS = """n.id, n.service_id, n.template_id, n.template_version, n.notification_type, n.to,
       n.reply_to_text, n.unsubscribe_url,
       n.personalisation, n.body, n.subject, n.reference, n.key_type, n.api_key_id, n.billable_units,
       n.created_at, n.attempts, n.last_provider, n.sticky_provider, n.last_error, n.rate_multiplier,
       n.job_id, n.job_row_number,
       s.research_mode, s.sms_sender, s.email_from, t.subject AS template_subject, t.content AS template_content"""
_DUE = text(
    f"""WITH due AS (
           SELECT id FROM notifications
           WHERE status = 'created' AND next_attempt_at <= :now
             AND (republished_at IS NULL OR republished_at < next_attempt_at OR republished_at < :resweep_before)
           ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED)
       UPDATE notifications AS n SET republished_at = :now
       FROM due, services AS s, templates_history AS t
       WHERE n.id = due.id AND s.id = n.service_id AND t.id = n.template_id AND t.version = n.template_version
       RETURNING {_DUE_COLUMNS}"""
)
_NEVER_ATTEMPTED = text(
    f"""WITH due AS (
           SELECT id FROM notifications
           WHERE status = 'created' AND next_attempt_at IS NULL AND created_at > :after AND created_at < :before
             AND (republished_at IS NULL OR republished_at < :resweep_before)
           ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED)
       UPDATE notifications AS n SET republished_at = :now
       FROM due, services AS s, templates_history AS t
       WHERE n.id = due.id AND s.id = n.service_id AND t.id = n.template_id AND t.version = n.template_version
       RETURNING {_DUE_COLUMNS}"""
)


@metrics.instrumented
def take_due(conn: Connection, now: datetime, resweep_before: datetime, limit: int) -> list[Any]:
    """Rows whose retry is due or whose lease ran out, marked as re-published now (commit only after
    the publish was confirmed). A row re-published since it fell due is left alone until `resweep_before`."""
    return list(conn.execute(_DUE, {"now": now, "resweep_before": resweep_before, "limit": limit}))


@metrics.instrumented
def take_never_attempted(
    conn: Connection, after: datetime, before: datetime, now: datetime, resweep_before: datetime, limit: int
) -> list[Any]:
    """Rows stored but never attempted, created between `after` and `before` (Notify's replay)."""
    params = {"after": after, "before": before, "now": now, "resweep_before": resweep_before, "limit": limit}
    return list(conn.execute(_NEVER_ATTEMPTED, params))


_STUCK_COUNTS = text(
    """SELECT status, count(*) FROM notifications
       WHERE status IN ('created', 'sending', 'pending') AND created_at < :before
         AND NOT (attempts = 0 AND next_attempt_at IS NOT NULL AND next_attempt_at > :now)
         AND NOT (status = 'created' AND job_id IS NOT NULL)
       GROUP BY status"""
)


@metrics.instrumented
def stuck_counts(conn: Connection, before: datetime, now: datetime) -> dict[str, int]:
    """How many rows created before `before` are still in flight, per status (for the stuck gauge). A
    message scheduled for later is waiting, not stuck; a job's row not yet handed off waits its turn in
    the bulk lanes (a job making no progress has its own check, check-job-status, and alert)."""
    return {str(r[0]): int(r[1]) for r in conn.execute(_STUCK_COUNTS, {"before": before, "now": now})}
