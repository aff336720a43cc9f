"""SQL for CSV jobs: the job row and its file, guarded status moves, progress, and the counts of its rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, text

from herald import metrics
from herald.db.models import Job, JobFile
from herald.domain import statuses as st


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    service_id: str
    template_id: str
    template_version: int
    notification_type: str
    original_file_name: str
    row_count: int
    status: str
    api_key_id: str | None
    key_type: str
    created_at: datetime
    scheduled_for: datetime | None
    processing_started: datetime | None
    processing_finished: datetime | None
    rows_queued: int
    rows_rejected: int


_COLUMNS = (
    Job.id,
    Job.service_id,
    Job.template_id,
    Job.template_version,
    Job.notification_type,
    Job.original_file_name,
    Job.row_count,
    Job.status,
    Job.api_key_id,
    Job.key_type,
    Job.created_at,
    Job.scheduled_for,
    Job.processing_started,
    Job.processing_finished,
    Job.rows_queued,
    Job.rows_rejected,
)


def _row(r: Any) -> JobRow:
    return JobRow(
        id=str(r.id),
        service_id=str(r.service_id),
        template_id=str(r.template_id),
        template_version=r.template_version,
        notification_type=r.notification_type,
        original_file_name=r.original_file_name,
        row_count=r.row_count,
        status=r.status,
        api_key_id=str(r.api_key_id) if r.api_key_id else None,
        key_type=r.key_type,
        created_at=r.created_at,
        scheduled_for=r.scheduled_for,
        processing_started=r.processing_started,
        processing_finished=r.processing_finished,
        rows_queued=r.rows_queued,
        rows_rejected=r.rows_rejected,
    )


@metrics.instrumented
def create(conn: Connection, job: dict[str, Any], compressed_file: bytes) -> JobRow:
    row = conn.execute(insert(Job).returning(*_COLUMNS), job).one()
    conn.execute(insert(JobFile), {"job_id": job["id"], "data": compressed_file})
    return _row(row)


_BY_ID = select(*_COLUMNS).where(Job.id == bindparam("job_id"))


@metrics.instrumented
def get(conn: Connection, job_id: str, service_id: str | None = None) -> JobRow | None:
    query = _BY_ID if service_id is None else _BY_ID.where(Job.service_id == bindparam("service_id"))
    row = conn.execute(query, {"job_id": job_id, "service_id": service_id}).one_or_none()
    return _row(row) if row is not None else None


@metrics.instrumented
def lock(conn: Connection, job_id: str) -> JobRow | None:
    """The job under a row lock until the transaction ends: a scheduler that made it pending but has not
    committed yet is waited for, so its process-job message never finds it still scheduled."""
    row = conn.execute(_BY_ID.with_for_update(), {"job_id": job_id}).one_or_none()
    return _row(row) if row is not None else None


@metrics.instrumented
def page(conn: Connection, service_id: str, limit: int, older_than: str | None) -> list[JobRow]:
    """Newest first; `older_than`: a job id of the service, the page starts after it."""
    query = select(*_COLUMNS).where(Job.service_id == service_id)
    if older_than is not None:
        anchor = select(Job.created_at, Job.id).where(Job.id == older_than, Job.service_id == service_id).subquery()
        query = query.where(
            (Job.created_at < anchor.c.created_at) | ((Job.created_at == anchor.c.created_at) & (Job.id < anchor.c.id))
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return [_row(r) for r in conn.execute(query)]


@metrics.instrumented
def file(conn: Connection, job_id: str) -> bytes | None:
    data = conn.execute(select(JobFile.data).where(JobFile.job_id == job_id)).scalar_one_or_none()
    return bytes(data) if data is not None else None


_COUNTS = text(
    """SELECT job_id, status, count(*) FROM notifications WHERE job_id = ANY(CAST(:job_ids AS uuid[]))
       GROUP BY job_id, status"""
)


@metrics.instrumented
def counts_by_status(conn: Connection, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Each job's stored rows per notification status: one grouped read on the job_id index."""
    counts: dict[str, dict[str, int]] = {}
    if job_ids:
        for job_id, status, count in conn.execute(_COUNTS, {"job_ids": list(job_ids)}):
            counts.setdefault(str(job_id), {})[str(status)] = int(count)
    return counts


_MOVE = text(
    """UPDATE jobs SET status = :status,
              processing_started = COALESCE(processing_started, CAST(:started AS timestamptz)),
              progress_at = COALESCE(CAST(:started AS timestamptz), progress_at)
       WHERE id = :job_id AND status = :from_status"""
)


@metrics.instrumented
def move(conn: Connection, job_id: str, from_status: str, status: str, started: datetime | None = None) -> bool:
    """Moves the job only from `from_status`; `started`: processing starts now. Whether it moved."""
    params = {"job_id": job_id, "from_status": from_status, "status": status, "started": started}
    return bool(conn.execute(_MOVE, params).rowcount)


_RECORD_PROGRESS = text(
    """UPDATE jobs SET rows_queued = GREATEST(rows_queued, :rows), progress_at = :now,
           rows_rejected = rows_rejected + CASE WHEN rows_queued < :rows THEN :rejected ELSE 0 END
       WHERE id = :job_id"""
)


@metrics.instrumented
def record_progress(conn: Connection, job_id: str, rows_queued: int, rejected: int, now: datetime) -> None:
    """Rows up to `rows_queued` are confirmed on bulk-*, `rejected` of the last chunk's refused; never moves
    back, and a chunk recorded twice (two processors of one job) counts its refusals once."""
    conn.execute(_RECORD_PROGRESS, {"job_id": job_id, "rows": rows_queued, "rejected": rejected, "now": now})


_TAKE_DUE = text(
    """UPDATE jobs SET status = 'pending', progress_at = :now
       WHERE id IN (SELECT id FROM jobs WHERE status = 'scheduled' AND scheduled_for <= :now
                    ORDER BY scheduled_for LIMIT :limit FOR UPDATE SKIP LOCKED)
       RETURNING id"""
)


@metrics.instrumented
def take_due_scheduled(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Scheduled jobs whose time has come, made pending as of `now` (commit after their process-job
    message is confirmed: the rows stay locked until then, and the processor waits for the lock)."""
    return [str(r[0]) for r in conn.execute(_TAKE_DUE, {"now": now, "limit": limit})]


_TAKE_STALLED = text(
    """UPDATE jobs SET progress_at = :now
       WHERE id IN (SELECT id FROM jobs
                    WHERE status IN ('pending', 'in progress') AND COALESCE(progress_at, created_at) < :before
                    ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED)
         AND (status = 'pending' OR rows_queued < row_count)
       RETURNING id"""
)


@metrics.instrumented
def take_stalled(conn: Connection, before: datetime, now: datetime, limit: int) -> list[str]:
    """Jobs started (or pending) that have made no progress since `before` and still have rows to queue:
    marked as progressing now, so that they are re-queued once per stall."""
    return [str(r[0]) for r in conn.execute(_TAKE_STALLED, {"before": before, "now": now, "limit": limit})]


_FINISH = text(
    f"""UPDATE jobs AS j SET status = 'finished', processing_finished = :now
        WHERE j.status = 'in progress' AND j.rows_queued >= j.row_count
          AND (CAST(:job_id AS uuid) IS NULL OR j.id = CAST(:job_id AS uuid))
          AND (SELECT count(*) FROM notifications AS n
               WHERE n.job_id = j.id AND n.status IN ({", ".join(f"'{s}'" for s in sorted(st.DONE))}))
              >= j.row_count - j.rows_rejected
        RETURNING j.id, j.processing_started"""
)


@metrics.instrumented
def finish_done(conn: Connection, now: datetime, job_id: str | None = None) -> list[tuple[str, datetime | None]]:
    """Jobs in progress whose every row is queued, stored and done become finished (one job, or all).
    Returns each finished job's id and when its processing started."""
    return [(str(r[0]), r[1]) for r in conn.execute(_FINISH, {"now": now, "job_id": job_id})]
