"""SQL for scheduled_task_runs and the advisory locks that keep two schedulers from running one task."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from herald.db.models import TaskRun


@dataclass(frozen=True, slots=True)
class TaskRunRow:
    name: str
    last_started_at: datetime | None
    last_finished_at: datetime | None  # earlier than last_started_at while a run is in progress
    last_summary: str | None


def lock_key(name: str) -> int:
    """A stable signed 64-bit key: Python's hash() differs per process, so replicas would not agree."""
    digest = hashlib.blake2b(f"herald.scheduler:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def try_lock(conn: Connection, name: str) -> bool:
    """Session-level: held until unlock() or until the connection closes (a crashed replica frees it)."""
    return bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(name)}))


def unlock(conn: Connection, name: str) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})


def last_runs(conn: Connection) -> dict[str, TaskRunRow]:
    rows = conn.execute(
        select(TaskRun.name, TaskRun.last_started_at, TaskRun.last_finished_at, TaskRun.last_summary)
    ).all()
    return {r.name: TaskRunRow(*r) for r in rows}


def last_started(conn: Connection, name: str) -> datetime | None:
    return conn.scalar(select(TaskRun.last_started_at).where(TaskRun.name == name))


def record_start(conn: Connection, name: str, started_at: datetime) -> None:
    statement = pg_insert(TaskRun).values(name=name, last_started_at=started_at)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[TaskRun.name], set_={"last_started_at": statement.excluded.last_started_at}
        )
    )


def record_finish(conn: Connection, name: str, finished_at: datetime, summary: str) -> None:
    conn.execute(update(TaskRun).where(TaskRun.name == name).values(last_finished_at=finished_at, last_summary=summary))
